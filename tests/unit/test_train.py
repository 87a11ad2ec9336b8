"""Training engine: loss terms, exact resume, non-finite guard, checkpoints, export, time limit."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from dasrlib import losses
from dasrlib.config import ConfigError, config_hash, load_config, to_dict
from dasrlib.degradation.pairs import TrainingBatch
from dasrlib.models.checkpoints import load_model
from dasrlib.models.dasr import DASR
from dasrlib.train.cli import main as train_main
from dasrlib.train.config import TrainConfig, config_from_parameters, resume_hash
from dasrlib.train.loop import TrainingIncompleteError, require_finished, stage_configs, train
from dasrlib.train.state import (
    CheckpointNotFound,
    latest_iteration,
    load_checkpoint,
    read_run_config,
    write_checkpoint,
)
from dasrlib.train.trainer import NonFiniteLossError, Trainer

TINY = dict(
    num_feat=4,
    num_block=1,
    num_experts=2,
    batch_size=2,
    patch_size=32,
    queue_size=4,
    data_block_iters=2,
    val_images=1,
    val_crop=32,
    val_levels=("bicubic", "severe"),
    disc_num_feat=4,
    allow_random_vgg_for_tests=True,
    progress=False,
    log_every=1,
    val_every=100,
)


def tiny_config(tmp_path, **changes) -> TrainConfig:
    return config_from_parameters({**TINY, "out_dir": str(tmp_path), "name": "run", **changes})


def tiny_batch(seed: int = 0) -> TrainingBatch:
    g = torch.Generator().manual_seed(seed)
    hr = torch.rand(2, 3, 32, 32, generator=g)
    lr = torch.nn.functional.avg_pool2d(hr, 4)
    v = torch.rand(2, 33, generator=g)
    return TrainingBatch(lr=lr, hr=hr, hr_usm=hr, v=v, level=torch.zeros(2, dtype=torch.long))


def make_trainer(config: TrainConfig) -> Trainer:
    return Trainer(config, device=torch.device("cpu"))


def generator_grad(config: TrainConfig) -> torch.Tensor:
    trainer = make_trainer(config)
    terms, _ = trainer.generator_losses(tiny_batch())
    terms["total"].backward()
    grads = [
        torch.zeros(p.numel()) if p.grad is None else p.grad.flatten()
        for p in trainer.generator.parameters()
    ]
    return torch.cat(grads)


WEIGHTS = ("pixel_weight", "regression_weight", "perceptual_weight", "adversarial_weight")


@pytest.mark.parametrize("term", WEIGHTS)
def test_each_loss_term_changes_the_gradient(tmp_path, term) -> None:
    # Only the pixel loss plus the term under test (the random VGG is slow: build it only here).
    other = "regression_weight" if term == "pixel_weight" else "pixel_weight"
    weights = {w: 1.0 if w in (term, other) else 0.0 for w in WEIGHTS}
    base = tiny_config(tmp_path, stage="dasr", **weights)
    with_term = generator_grad(base)
    without = generator_grad(base.replace(**{term: 0.0}))
    assert with_term.shape == without.shape
    assert (with_term - without).abs().max() > 1e-7


def test_stage_terms_and_zero_weights_build_nothing(tmp_path) -> None:
    pre = make_trainer(tiny_config(tmp_path, stage="pretrain"))
    assert pre.weights == {"pixel": 1.0} and pre.perceptual is None and pre.disc is None
    dasr = make_trainer(
        tiny_config(tmp_path, stage="dasr", perceptual_weight=0.0, adversarial_weight=0.0)
    )
    assert dasr.weights == {"pixel": 1.0, "regression": 1.0}
    assert dasr.perceptual is None and dasr.disc is None and isinstance(dasr.generator, DASR)
    base = make_trainer(tiny_config(tmp_path, stage="baseline"))
    assert set(base.weights) == {"pixel", "perceptual", "adversarial"}


def test_perceptual_network_is_chosen_and_recorded(tmp_path) -> None:
    vgg16 = make_trainer(tiny_config(tmp_path, stage="baseline", vgg_network="vgg16"))
    assert vgg16.perceptual is not None and vgg16.perceptual.network == "vgg16"
    # conv1_2, conv2_2, conv3_3, conv4_3, conv5_3 of vgg16().features, the paper's weights
    assert vgg16.perceptual.layer_weights == {2: 0.1, 7: 0.1, 14: 1.0, 21: 1.0, 28: 1.0}
    vgg16.write_run_json("running")
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["perceptual"]["network"] == "vgg16"
    vgg19 = make_trainer(tiny_config(tmp_path, stage="baseline"))
    assert vgg19.perceptual.network == "vgg19" and 34 in vgg19.perceptual.layer_weights
    with pytest.raises(ValueError, match="vgg_network 'vgg11'"):
        tiny_config(tmp_path, vgg_network="vgg11")


def test_config_rejects_unknown_keys_and_bad_values(tmp_path) -> None:
    with pytest.raises(ConfigError, match="iteratons"):
        load_config(TrainConfig, {"iteratons": 5})
    with pytest.raises(ValueError, match="patch_size"):
        config_from_parameters({"patch_size": 30})
    with pytest.raises(ValueError, match="pretrain_iterations"):
        config_from_parameters({"stage": "both"})
    defaults = TrainConfig()
    assert defaults.optimiser.betas == (0.9, 0.99) and defaults.loss.adversarial_weight == 0.1


def test_config_only_checks_run_when_the_config_is_built() -> None:
    with pytest.raises(ConfigError, match="no loss term"):
        config_from_parameters({"stage": "pretrain", "pixel_weight": 0.0})
    with pytest.raises(ConfigError, match="no loss term"):  # the dasr part of "both"
        config_from_parameters(
            {"stage": "both", "pretrain_iterations": 1, **{w: 0.0 for w in WEIGHTS}}
        )
    with pytest.raises(ConfigError, match="patch_size % 8"):
        config_from_parameters({"stage": "baseline", "patch_size": 36})
    assert config_from_parameters({"stage": "pretrain", "patch_size": 36}).data.patch_size == 36


def test_hashes_of_existing_runs_are_unchanged() -> None:
    """Run folders written with the flat config class keep their config and resume hashes."""
    assert config_hash(TrainConfig()) == "6c45fb164d7c" == resume_hash(TrainConfig())
    config = config_from_parameters(
        {"stage": "baseline", "backbone": "rrdb", "lr": 2e-4, "name": "x", "iterations": 7}
    )
    assert (config_hash(config), resume_hash(config)) == ("89708140f87c", "3ef5531ec799")
    # Only the schedule and run sections are free on resume.
    assert resume_hash(config.replace(device="cpu", iterations=9, log_every=3)) == "3ef5531ec799"
    assert resume_hash(config.replace(val_images=2)) != "3ef5531ec799"


def test_flat_names_and_sections_build_the_same_config() -> None:
    flat = config_from_parameters({"num_feat": 8, "lr": 3e-4, "name": "n"})
    nested = config_from_parameters(
        {"model": {"num_feat": 8}, "optimiser": {"lr": 3e-4}, "run": {"name": "n"}}
    )
    dotted = config_from_parameters(
        {}, overrides={"model.num_feat": 8, "optimiser.lr": 3e-4, "run.name": "n"}
    )
    assert flat == nested == dotted
    assert (flat.model.num_feat, flat.optimiser.lr, flat.run.name) == (8, 3e-4, "n")
    assert to_dict(flat)["num_feat"] == 8  # files keep the flat names
    with pytest.raises(ConfigError, match="unknown key 'num_feats'"):
        config_from_parameters({"overrides": {"num_feats": 8}})


def test_stage_both_runs_pretrain_then_dasr_from_it() -> None:
    both = config_from_parameters({"stage": "both", "name": "x", "pretrain_iterations": 7})
    pre, dasr = stage_configs(both)
    assert (pre.stage, pre.run.name, pre.schedule.iterations) == ("pretrain", "x_pretrain", 7)
    assert (dasr.stage, dasr.run.name, dasr.model.init_from) == (
        "dasr",
        "x",
        "results/runs/x_pretrain",
    )


def params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_a_dasr_start_from_one_pretrained_network_lets_its_experts_diverge(tmp_path) -> None:
    pretrained = make_trainer(tiny_config(tmp_path, stage="pretrain")).generator
    weights = tmp_path / "pretrained.safetensors"
    save_file({k: v.contiguous() for k, v in pretrained.state_dict().items()}, weights)
    trainer = make_trainer(
        tiny_config(tmp_path, stage="dasr", init_from=str(weights), perceptual_weight=0.0)
    )
    model, ema = trainer.generator, trainer.ema.model
    assert model.experts_are_copies()  # the same pretrained network in every expert ...
    last = model.weighting.MappingNet[-1].weight.detach()
    assert (last[0] - last[1]).abs().max() > 0  # ... but A weights them differently
    assert torch.equal(last, ema.weighting.MappingNet[-1].weight)
    batch = tiny_batch()
    with torch.no_grad():  # the mixed network is still the pretrained one
        torch.testing.assert_close(model(batch.lr).sr, pretrained(batch.lr), rtol=0, atol=1e-5)
    terms, _ = trainer.generator_losses(batch)
    terms["total"].backward()
    trainer.opt_g.step()
    assert not model.experts_are_copies()


def test_resume_is_exact(tmp_path) -> None:
    """k steps + resume + k steps == 2k steps (generator, EMA, discriminator, optimisers)."""
    k = 2  # resumes mid data-block (blocks of 3), so the stream's fast-forward is exercised
    config = tiny_config(
        tmp_path,
        stage="dasr",
        checkpoint_every=k,
        iterations=2 * k,
        queue_size=2,
        data_block_iters=3,
        val_levels=("bicubic",),
        perceptual_weight=0.0,  # frozen VGG: nothing to resume, and slow on a CPU
    )
    straight = train(config.replace(name="straight"))
    train(config.replace(name="resumed", iterations=k))
    assert json.loads((tmp_path / "resumed" / "run.json").read_text())["iteration"] == k
    resumed = train(config.replace(name="resumed"))
    a, _ = load_checkpoint(straight / "checkpoints")
    b, state = load_checkpoint(resumed / "checkpoints")
    assert state["iteration"] == 2 * k and set(a) == set(b)
    assert any(key.startswith("discriminator.") for key in a)
    assert any(key.startswith("optimizer_d.") for key in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    metrics = pd.read_csv(resumed / "metrics.csv")
    assert metrics["iteration"].tolist() == list(range(1, 2 * k + 1))
    assert (
        metrics["loss_total"].tolist()
        == pd.read_csv(straight / "metrics.csv")["loss_total"].tolist()
    )


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resume_is_exact_with_channels_last(tmp_path, precision: str) -> None:
    """A resumed channels-last run continues bit for bit: the optimiser state read back from the
    (contiguous) checkpoint takes its parameter's layout again (fused Adam reads memory order)."""
    config = tiny_config(
        tmp_path,
        stage="pretrain",
        iterations=4,
        checkpoint_every=2,
        channels_last=True,
        precision=precision,
        val_images=0,
        queue_size=2,
        data_block_iters=3,
    )
    straight = train(config.replace(name="straight"))
    train(config.replace(name="resumed", iterations=2))
    resumed = train(config.replace(name="resumed"))
    a, _ = load_checkpoint(straight / "checkpoints")
    b, _ = load_checkpoint(resumed / "checkpoints")
    assert all(torch.equal(a[key], b[key]) for key in a)


def _same_checkpoints(a_run: Path, b_run: Path) -> None:
    a, _ = load_checkpoint(a_run / "checkpoints")
    b, _ = load_checkpoint(b_run / "checkpoints")
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("prefetch", [True, False])
def test_a_time_limit_mid_block_resumes_from_the_stored_stream(tmp_path, caplog, prefetch) -> None:
    """The checkpoint a time limit writes holds the data stream's position (with the batch the
    prefetch thread already drew): the resume draws nothing twice and equals a straight run."""
    config = tiny_config(
        tmp_path,
        stage="pretrain",
        iterations=5,
        data_block_iters=4,
        queue_size=4,
        val_images=0,
        prefetch_data=prefetch,
    )
    straight = train(config.replace(name="straight"))
    resumed = train(config.replace(name="resumed"), stop=lambda iteration: iteration == 3)
    tensors, state = load_checkpoint(resumed / "checkpoints")
    assert state["iteration"] == 3 and ("data.batch.lr" in tensors) == prefetch
    with caplog.at_level(logging.INFO, logger="dasrlib.train"):
        train(config.replace(name="resumed"))
    assert "data stream: continuing at iteration 3" in caplog.text
    assert "drawing" not in caplog.text
    _same_checkpoints(straight, resumed)


def test_a_checkpoint_without_stream_state_replays_the_block(tmp_path, caplog) -> None:
    """Older checkpoints (and other ranks' state) fall back to replaying the block: still exact."""
    config = tiny_config(
        tmp_path, stage="pretrain", iterations=4, data_block_iters=4, queue_size=4, val_images=0
    )
    straight = train(config.replace(name="straight"))
    resumed = train(config.replace(name="resumed"), stop=lambda iteration: iteration == 2)
    folder = resumed / "checkpoints"
    tensors, state = load_checkpoint(folder)
    assert any(key.startswith("data.") for key in tensors)
    old = {k: v for k, v in tensors.items() if not k.startswith("data.")}
    keep = ("checkpoint_id", "weights_sha256")
    write_checkpoint(folder, old, {k: v for k, v in state.items() if k not in keep})
    with caplog.at_level(logging.INFO, logger="dasrlib.train"):
        train(config.replace(name="resumed"))
    assert "drawing 2 batches to reach iteration 2" in caplog.text
    _same_checkpoints(straight, resumed)


def test_resume_refuses_a_changed_config_but_allows_more_iterations(tmp_path) -> None:
    config = tiny_config(tmp_path, stage="pretrain", iterations=1, val_images=0)
    train(config)
    with pytest.raises(ConfigError, match="lr"):
        train(config.replace(lr=3e-4))
    run = train(config.replace(iterations=2, log_every=2))
    assert json.loads((run / "run.json").read_text())["iteration"] == 2
    # resume="never" starts over (and removes the old checkpoints and logs).
    run = train(config.replace(lr=3e-4, resume="never"))
    assert pd.read_csv(run / "metrics.csv")["iteration"].tolist() == [1]
    assert load_checkpoint(run / "checkpoints")[1]["config"]["lr"] == 3e-4
    assert not (run / "checkpoints" / "previous.state.json").exists()


def test_nonfinite_loss_is_skipped_then_stops(tmp_path, monkeypatch) -> None:
    real = losses.pixel_loss
    calls = {"n": 0}

    def flaky(sr, target):
        calls["n"] += 1
        value = real(sr, target)
        return value * float("nan") if calls["n"] in poisoned else value

    monkeypatch.setattr(losses, "pixel_loss", flaky)
    config = tiny_config(tmp_path, stage="pretrain", val_images=0, max_nonfinite_in_a_row=2)
    trainer = make_trainer(config)
    trainer.prepare_data()
    poisoned = {2}
    trainer.step()
    before = params(trainer.generator)
    trainer.iteration += 1
    terms = trainer.step()  # poisoned: skipped, weights untouched
    assert torch.isnan(terms["total"]) and trainer.nonfinite_total == 1
    for key, value in params(trainer.generator).items():
        assert torch.equal(value, before[key])
    trainer.iteration += 1
    trainer.step()  # finite again: counter of the run of skips resets
    assert trainer.nonfinite_in_a_row == 0 and trainer.nonfinite_total == 1
    poisoned = {4, 5}
    trainer.step()
    with pytest.raises(NonFiniteLossError, match="2 non-finite losses in a row"):
        trainer.step()


FMT = "dasrlib-train-state/1"


def save_pair(folder, i: int) -> None:
    write_checkpoint(folder, {"w": torch.full((3,), float(i))}, {"iteration": i, "format": FMT})


@pytest.mark.parametrize("killed_at_rename", [0, 1, 2, 3])
def test_checkpoint_pair_survives_a_kill_at_any_point(tmp_path, monkeypatch, killed_at_rename):
    folder = tmp_path / "ckpt"
    with pytest.raises(CheckpointNotFound):
        load_checkpoint(folder)
    save_pair(folder, 1)
    save_pair(folder, 2)
    real_replace, calls = os.replace, {"n": 0}

    def replace_then_die(src, dst):
        if calls["n"] == killed_at_rename:
            raise KeyboardInterrupt("killed")
        calls["n"] += 1
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        save_pair(folder, 3)
    tensors, state = load_checkpoint(folder)
    assert state["iteration"] in (2, 3)  # the new pair, or the last complete one
    assert tensors["w"][0] == state["iteration"]
    assert latest_iteration(folder) == state["iteration"]  # what a resume continues from


def test_corrupted_checkpoint_falls_back_to_the_previous_pair(tmp_path) -> None:
    folder = tmp_path / "ckpt"
    save_pair(folder, 1)
    save_pair(folder, 2)
    data = bytearray((folder / "latest.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "latest.safetensors").write_bytes(bytes(data))
    tensors, state = load_checkpoint(folder)
    assert state["iteration"] == 1 and tensors["w"][0] == 1
    (folder / "previous.safetensors").unlink()
    with pytest.raises(CheckpointNotFound, match=str(folder)):
        load_checkpoint(folder)


def test_truncated_checkpoint_state_is_skipped_with_a_warning(tmp_path, caplog) -> None:
    folder = tmp_path / "ckpt"
    save_pair(folder, 1)
    save_pair(folder, 2)
    latest = folder / "latest.state.json"
    latest.write_text(latest.read_text()[:10])
    with caplog.at_level(logging.WARNING, logger="dasrlib.train"):
        tensors, state = load_checkpoint(folder)
    assert state["iteration"] == 1 and tensors["w"][0] == 1
    assert str(latest) in caplog.text


def test_time_limit_between_log_rows_keeps_the_last_losses(tmp_path) -> None:
    config = tiny_config(tmp_path, stage="pretrain", iterations=10, log_every=2)
    run = train(config, stop=lambda iteration: iteration == 3)
    assert json.loads((run / "run.json").read_text())["status"] == "time_limit"
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["iteration"].tolist() == [2, 3]
    assert metrics["loss_total"].notna().all()


def test_time_limit_stops_cleanly_and_export_loads(tmp_path) -> None:
    config = tiny_config(
        tmp_path, stage="dasr", iterations=10_000, time_limit_minutes=1e-6, export_dtype="fp16"
    )
    run = train(config)
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "time_limit" and record["iteration"] < 10_000
    assert record["config_hash"] and record["metadata"]["versions"]["torch"]
    assert record["config"]["num_feat"] == 4 and read_run_config(run) == config  # flat on disk
    tensors, state = load_checkpoint(run / "checkpoints")
    assert state["iteration"] == record["iteration"]
    model = load_model(run / "model.safetensors")
    assert isinstance(model, DASR)
    exported = load_file(str(run / "model.safetensors"))
    assert all(t.dtype == torch.float16 for t in exported.values() if t.is_floating_point())
    ema = {k[len("ema.") :]: v for k, v in tensors.items() if k.startswith("ema.")}
    for key, value in exported.items():
        assert torch.equal(value, ema[key].half()), key
    val = pd.read_csv(run / "val.csv")
    assert set(val["level"]) == {"bicubic", "severe"}
    assert (val["iteration"] == record["iteration"]).all()


def test_warm_restart_continues_count_and_schedule_with_fresh_adam(tmp_path) -> None:
    """init_from + start_iteration: the iteration count and lr milestones go on; Adam restarts."""
    config = tiny_config(tmp_path, stage="pretrain", iterations=2, val_images=0, lr_milestones=(3,))
    first = train(config)
    warm = train(config.replace(name="warm", init_from=str(first), start_iteration=2, iterations=4))
    metrics = pd.read_csv(warm / "metrics.csv")
    assert metrics["iteration"].tolist() == [3, 4]
    assert metrics["lr"].tolist() == [1e-4, 0.5e-4]  # milestone 3 passed within this run
    tensors, state = load_checkpoint(warm / "checkpoints")
    assert state["iteration"] == 4 and json.loads((warm / "run.json").read_text())["iteration"] == 4
    steps = [v for k, v in tensors.items() if k.startswith("optimizer_g.") and k.endswith(".step")]
    steps += [v for k, v in state["optimizer_g"]["scalars"].items() if k.endswith(".step")]
    assert steps and all(float(s) == 2 for s in steps)  # two Adam steps: a fresh optimiser
    with pytest.raises(ValueError, match="start_iteration"):
        config.replace(start_iteration=-1)


# -- a main job cut short says so --------------------------------------------------------------
def test_a_stage_cut_short_names_what_is_missing_and_how_to_continue(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, stage="both", pretrain_iterations=4, iterations=3)
    train(config, stop=lambda iteration: iteration == 2)  # as a time limit would
    with pytest.raises(TrainingIncompleteError) as error:
        require_finished(config)
    message = str(error.value)
    assert "\n" not in message
    assert "stage pretrain stopped at iteration 2 of 4" in message
    assert "stage dasr not started (3 iterations)" in message
    assert "Run the same command again" in message
    train(config)  # the second call finishes both stages
    require_finished(config)


def test_the_training_command_exits_non_zero_with_one_line_when_cut_short(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = tmp_path / "p.yaml"
    fields = {**TINY, "out_dir": str(tmp_path), "name": "run", "stage": "both"}
    fields.update(pretrain_iterations=50, iterations=3, time_limit_minutes=1e-6)
    params.write_text(
        yaml.safe_dump({k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()})
    )
    assert train_main(["--params", str(params)]) == 3
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "training did not finish within the time limit" in lines[0]
    assert "stage dasr not started" in lines[0]
