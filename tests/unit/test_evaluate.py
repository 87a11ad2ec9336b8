"""Evaluation over seeded test sets: every row present, n_images everywhere, failures named."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import torchvision

from dasrlib import evaluate as ev
from dasrlib import paper, testsets
from dasrlib.config import to_dict
from dasrlib.experiments import runs, table1, table2
from dasrlib.io import write_png
from dasrlib.methods import Method, MethodKind, method_from_spec
from dasrlib.metrics import ALEXNET_CHECKPOINT_NAME, LPIPSUnavailable, load_lpips, psnr_y
from dasrlib.models.baselines import build_rrdb
from dasrlib.models.checkpoints import save_weights
from dasrlib.models.dasr import DASR
from dasrlib.results import RESULT_COLUMNS
from dasrlib.testsets import load_testset

LEVELS = ("bicubic", "weak", "standard", "severe")
NAMES = ("img_a", "img_b")


@pytest.fixture(scope="module")
def hr_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hr")
    gen = torch.Generator().manual_seed(0)
    for name in NAMES:
        coarse = torch.rand(1, 3, 8, 10, generator=gen)
        img = F.interpolate(coarse, size=(50, 62), mode="bilinear", align_corners=False)[0]
        write_png(folder / f"{name}.png", img)  # 50x62: the builder crops HR to 48x60
    return folder


@pytest.fixture(scope="module")
def testset_dir(hr_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sets")
    status = testsets.prepare_testsets(hr_dir, out, levels=LEVELS, seed=0, max_images=None)
    assert not status.reused and "built" in status.message
    return out


def _means(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["aggregate"] == "mean"]


def test_paper_tables_are_complete() -> None:
    for table in (paper.PAPER_TABLE1, paper.PAPER_TABLE2):
        for method, levels in table.items():
            assert set(levels) == set(LEVELS), method
            for psnr, lpips_value in levels.values():
                assert 20 < psnr < 32 and 0 < lpips_value < 1
    assert paper.paper_value(paper.PAPER_TABLE1, "DASR", "severe", paper.METRIC_PSNR) == 23.93
    assert paper.paper_value(paper.PAPER_TABLE2, "RRDB", "weak", paper.METRIC_LPIPS) == 0.1569
    assert math.isnan(paper.paper_value(paper.PAPER_TABLE1, "Bicubic", "weak", paper.METRIC_PSNR))
    assert set(paper.PAPER_TABLE2_EFFICIENCY) == set(paper.PAPER_TABLE2)


def test_bicubic_rows_match_direct_computation(testset_dir, tmp_path) -> None:
    lpips = LPIPSUnavailable("weights not found at /nowhere/alexnet.pth")
    out_csv = tmp_path / "bicubic.csv"
    frame = ev.evaluate(
        Method.bicubic(), testset_dir, levels=LEVELS, device="cpu", lpips=lpips, out_csv=out_csv
    )
    assert list(frame.columns[: len(RESULT_COLUMNS)]) == list(RESULT_COLUMNS)
    assert frame["n_images"].notna().all()
    per_image = frame[frame["aggregate"] == "image"]
    # 2 images x 4 levels x (PSNR, SSIM); no v_mae for a method without a predictor.
    assert len(per_image) == 2 * 4 * 2 and set(per_image["n_images"]) == {1}
    assert set(per_image["image"]) == set(NAMES)
    means = _means(frame)
    for level in LEVELS:
        for metric in (paper.METRIC_PSNR, paper.METRIC_SSIM):
            row = means[(means["level"] == level) & (means["metric"] == metric)]
            assert len(row) == 1 and int(row["n_images"].iloc[0]) == 2
            images = per_image[(per_image["level"] == level) & (per_image["metric"] == metric)]
            assert row["value"].iloc[0] == pytest.approx(images["value"].mean())
        lp = means[(means["level"] == level) & (means["metric"] == paper.METRIC_LPIPS)]
        assert len(lp) == 1 and math.isnan(lp["value"].iloc[0]) and lp["n_images"].iloc[0] == 0
        assert lp["note"].iloc[0] == "n/a: weights not found at /nowhere/alexnet.pth"
    # An independent recomputation of one cell.
    name, lr, hr, _ = next(iter(load_testset(testset_dir, "weak")))
    sr = F.interpolate(lr[None], scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
    row = per_image[
        (per_image["level"] == "weak")
        & (per_image["metric"] == paper.METRIC_PSNR)
        & (per_image["image"] == name)
    ]
    assert row["value"].iloc[0] == pytest.approx(psnr_y(sr, hr), abs=1e-9)
    # The CSV and its sidecar are on disk.
    written = pd.read_csv(out_csv)
    assert len(written) == len(frame) and written["n_images"].notna().all()
    side = json.loads(out_csv.with_suffix(".json").read_text())
    assert side["config"]["testsets"]["seed"] == 0 and side["config"]["testsets"]["n_images"] == 2
    assert side["n_rows"] == len(frame)


def test_dasr_checkpoint_records_v_mae_and_lpips(testset_dir, tmp_path, monkeypatch) -> None:
    # LPIPS with a random AlexNet where torchvision caches it (the real loading path).
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(
        torchvision.models.alexnet(weights=None).state_dict(), cache / ALEXNET_CHECKPOINT_NAME
    )
    lpips = load_lpips(device="cpu")
    model = DASR(num_experts=2, num_feat=8, num_block=1, generator=torch.Generator())
    path = save_weights(model, tmp_path / "dasr.safetensors")
    method = Method.checkpoint(name="DASR (ours)", path=path, paper_name="DASR")
    frame = ev.evaluate(
        method,
        testset_dir,
        levels=("weak", "severe"),
        device="cpu",
        lpips=lpips,
        paper=paper.PAPER_TABLE1,
    )
    means = _means(frame)
    assert set(means["metric"]) == {
        paper.METRIC_PSNR,
        paper.METRIC_SSIM,
        paper.METRIC_LPIPS,
        paper.METRIC_V_MAE,
    }
    assert (means["n_images"] == 2).all()
    v_mae = means[means["metric"] == paper.METRIC_V_MAE]["value"]
    assert ((v_mae >= 0) & (v_mae <= 1)).all()
    lp = means[means["metric"] == paper.METRIC_LPIPS]["value"]
    assert (lp > 0).all() and lp.notna().all()
    severe_psnr = means[(means["level"] == "severe") & (means["metric"] == paper.METRIC_PSNR)]
    assert severe_psnr["paper_value"].iloc[0] == 23.93
    # Per-image rows carry no paper value (the paper reports means only).
    assert frame[frame["aggregate"] == "image"]["paper_value"].isna().all()


def test_size_mismatch_and_failures_name_the_image(testset_dir) -> None:
    def too_small(lr: torch.Tensor) -> tuple[torch.Tensor, None]:
        return F.interpolate(lr, scale_factor=2), None

    with pytest.raises(ev.EvaluationError, match=r"img_a.*\(bicubic\).*HR is"):
        ev.evaluate(
            Method.bicubic(), testset_dir, levels=("bicubic",), device="cpu", upscaler=too_small
        )

    def nan_output(lr: torch.Tensor) -> tuple[torch.Tensor, None]:
        return torch.full((1, 3, lr.shape[2] * 4, lr.shape[3] * 4), float("nan")), None

    with pytest.raises(ev.EvaluationError, match=r"non-finite values for image 'img_a' \(severe\)"):
        ev.evaluate(
            Method.bicubic(), testset_dir, levels=("severe",), device="cpu", upscaler=nan_output
        )

    def broken(lr: torch.Tensor) -> tuple[torch.Tensor, None]:
        raise RuntimeError("out of memory")

    with pytest.raises(ev.EvaluationError, match=r"img_a.*weak.*out of memory"):
        ev.evaluate(Method.bicubic(), testset_dir, levels=("weak",), device="cpu", upscaler=broken)


def test_missing_weights_raise_with_path(testset_dir, tmp_path) -> None:
    method = Method.third_party(name="BSRGAN", path=tmp_path / "BSRGAN.pth")
    with pytest.raises(FileNotFoundError, match="BSRGAN.pth"):
        ev.evaluate(method, testset_dir, levels=("weak",), device="cpu")


def test_method_specs() -> None:
    third = table1.TABLE1_THIRD_PARTY
    assert method_from_spec("RRDB", None, third_party=third) is None
    assert method_from_spec("Bicubic", "bicubic").kind is MethodKind.BICUBIC
    rrdb = method_from_spec("RRDB", "w/rrdb.pth", third_party=third, paper=paper.PAPER_TABLE1)
    assert rrdb.kind is MethodKind.THIRD_PARTY and rrdb.paper_name == "RRDB"
    ours = method_from_spec("DASR", "run/model.safetensors", third_party=third)
    assert ours.kind is MethodKind.CHECKPOINT
    official = method_from_spec("DASR", {"net_g": "g.pth", "net_p": "p.pth"}, third_party=third)
    assert official.kind is MethodKind.OFFICIAL_DASR and len(official.weights) == 2
    with pytest.raises(ValueError, match="net_p"):
        method_from_spec("DASR", {"net_g": "g.pth"})


def test_weights_spec_follows_the_weights_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DASR_WEIGHTS_DIR", str(tmp_path))
    spec = "weights:realesrgan-x4plus.safetensors"
    method = method_from_spec("Real-ESRGAN", spec, third_party=table1.TABLE1_THIRD_PARTY)
    assert method.kind is MethodKind.THIRD_PARTY
    assert method.weights == (tmp_path / "realesrgan-x4plus.safetensors",)


def test_table1_keeps_not_provided_rows(testset_dir, tmp_path) -> None:
    absent = tmp_path / "weights" / "BSRGAN.pth"
    methods = {"Bicubic": "bicubic", "RRDB": None, "BSRGAN": str(absent), "DASR": None}
    result = table1.tabulate(
        table1.plan(),
        testset_dir,
        methods=methods,
        levels=LEVELS,
        device="cpu",
        lpips=None,
        out_dir=tmp_path,
    )
    assert list(result.tables["PSNR-Y (dB) and LPIPS"].columns) == list(methods)
    assert (
        len(result.tables["PSNR-Y (dB) and LPIPS"]) == len(LEVELS) * 2
    )  # (set, metric) rows: PSNR and LPIPS
    assert not (result.tables["PSNR-Y (dB) and LPIPS"] == "missing").any().any()
    rrdb = result.tables["PSNR-Y (dB) and LPIPS"]["RRDB"]
    assert rrdb.str.startswith("not provided; to fill: put RRDB_PSNR_x4.pth").all()
    assert (
        result.tables["PSNR-Y (dB) and LPIPS"].loc[("Level-III", paper.METRIC_PSNR), "RRDB"]
        == f"not provided; to fill: {table1.TABLE1_HOW_TO_FILL['RRDB']}; paper 23.91"
    )
    assert (
        result.tables["PSNR-Y (dB) and LPIPS"]
        .loc[("Bicubic", paper.METRIC_PSNR), "Bicubic"]
        .endswith("(n=2)")
    )
    bsrgan = result.tables["PSNR-Y (dB) and LPIPS"].loc[("Level-I", paper.METRIC_PSNR), "BSRGAN"]
    assert bsrgan == (
        f"not provided: no file at {absent}; to fill: {table1.TABLE1_HOW_TO_FILL['BSRGAN']}; "
        "paper 26.78"
    )
    written = pd.read_csv(result.csv_path)
    assert set(written["method"]) == set(methods)
    assert (tmp_path / "table1.json").is_file()
    text = result.markdown_path.read_text()
    assert "| Level-II | psnr_y_db |" in text and "pretrained models) into data/weights/" in text


def test_prepare_testsets_reuses_only_on_exact_match(hr_dir, tmp_path) -> None:
    first = testsets.prepare_testsets(hr_dir, tmp_path, levels=("weak",), seed=0, max_images=None)
    assert not first.reused and "no manifest" in first.message
    same = testsets.prepare_testsets(hr_dir, tmp_path, levels=("weak",), seed=0, max_images=None)
    assert same.reused and "reusing" in same.message and "seed 0" in same.message
    more = testsets.prepare_testsets(
        hr_dir, tmp_path, levels=("weak", "bicubic"), seed=0, max_images=None
    )
    assert not more.reused and "levels" in more.message
    fewer = testsets.prepare_testsets(hr_dir, tmp_path, levels=("weak",), seed=0, max_images=1)
    assert not fewer.reused and "images differ" in fewer.message
    other = testsets.prepare_testsets(hr_dir, tmp_path, levels=("weak",), seed=1, max_images=1)
    assert not other.reused and "seed 0 != 1" in other.message
    # a set built by an older pipeline (another manifest format) is rebuilt, not reused
    manifest = tmp_path / testsets.MANIFEST_NAME
    old = json.loads(manifest.read_text()) | {"format": testsets.MANIFEST_FORMAT - 1}
    manifest.write_text(json.dumps(old))
    rebuilt = testsets.prepare_testsets(hr_dir, tmp_path, levels=("weak",), seed=1, max_images=1)
    assert not rebuilt.reused and "manifest format" in rebuilt.message
    assert testsets.read_testset_manifest(tmp_path)["format"] == testsets.MANIFEST_FORMAT


def test_table2_plan_shares_the_budget() -> None:
    budget = {"iterations": 3, "batch_size": 2, "patch_size": 32, "out_dir": "runs", "seed": 1}
    configs = table2.plan(budget, dasr_pretrain_iterations=2)
    assert list(configs) == ["SRResNet", "EDSR", "RRDB", "SwinIR", "DASR"]
    for method, stages in configs.items():
        last = to_dict(stages[-1])
        assert (last["iterations"], last["batch_size"], last["patch_size"], last["seed"]) == (
            3,
            2,
            32,
            1,
        )
        assert last["name"].startswith(f"table2_{method.lower()}_")
        assert last["backbone"] == table2.TABLE2_TRAINING[method]["backbone"]
    pretrain, dasr = (to_dict(config) for config in configs["DASR"])
    assert pretrain["stage"] == "pretrain" and pretrain["iterations"] == 2
    assert dasr["stage"] == "dasr" and dasr["init_from"] == f"runs/{pretrain['name']}"
    # Another budget gets other run folders; more iterations continue the same one.
    other = table2.plan({**budget, "patch_size": 64}, dasr_pretrain_iterations=2)
    assert other["SRResNet"][0].run.path != configs["SRResNet"][0].run.path
    longer = table2.plan({**budget, "iterations": 9}, dasr_pretrain_iterations=2)
    assert longer["SRResNet"][0].run.path == configs["SRResNet"][0].run.path
    with pytest.raises(ValueError, match="backbone"):
        table2.plan({**budget, "backbone": "edsr"}, dasr_pretrain_iterations=1)


@pytest.mark.slow
def test_train_or_load_reuses_a_finished_run_with_the_same_hash(hr_dir, tmp_path) -> None:
    budget = {
        "iterations": 1,
        "batch_size": 1,
        "patch_size": 32,
        "num_feat": 4,
        "num_block": 1,
        "data_root": str(hr_dir),
        "out_dir": str(tmp_path),
        "device": "cpu",
        "perceptual_weight": 0.0,
        "adversarial_weight": 0.0,
        "val_images": 0,
        "queue_size": 2,
        "progress": False,
    }
    (config,) = table2.plan(budget, methods=["SRResNet"], dasr_pretrain_iterations=1)["SRResNet"]
    first = runs.train_or_load(config)
    assert not first.reused and "no run yet" in first.message and first.weights.is_file()
    again = runs.train_or_load(config)
    assert again.reused and again.run_dir == first.run_dir and "loaded" in again.message
    (longer,) = table2.plan(
        {**budget, "iterations": 2}, methods=["SRResNet"], dasr_pretrain_iterations=1
    )["SRResNet"]
    more = runs.train_or_load(longer)
    assert not more.reused and "config hash" in more.message
    assert "1 iterations this call, 2 in all" in more.message


def _official_files(
    folder: Path, gen: torch.Generator, n: int = 2, nf: int = 4
) -> tuple[Path, Path]:
    """Tiny random net_g / net_p files in the reference implementation's layout."""
    shapes = {"conv_first": (nf, 3), "upconv1": (4 * nf, nf), "upconv2": (4 * nf, nf)}
    shapes |= {"conv_hr": (nf, nf), "conv_last": (3, nf), "body.0.conv1": (nf, nf)}
    shapes |= {"body.0.conv2": (nf, nf)}
    g_state = {}
    for name, (out_c, in_c) in shapes.items():
        g_state[f"{name}.weight"] = 0.1 * torch.randn(n, out_c, in_c, 3, 3, generator=gen)
        g_state[f"{name}.bias"] = torch.zeros(n, out_c)
    channels = [3, nf, nf, nf, nf, nf, 33]
    p_state = {}
    for i in range(6):
        p_state[f"ConvNet.{2 * i}.weight"] = 0.1 * torch.randn(
            channels[i + 1], channels[i], 5, 5, generator=gen
        )
        p_state[f"ConvNet.{2 * i}.bias"] = torch.zeros(channels[i + 1])
    p_state["MappingNet.0.weight"] = 0.3 * torch.randn(15, 33, generator=gen)
    p_state["MappingNet.0.bias"] = torch.zeros(15)
    p_state["MappingNet.1.weight"] = 0.3 * torch.randn(n, 15, generator=gen)
    p_state["MappingNet.1.bias"] = torch.full((n,), 0.5)
    torch.save({"params": g_state}, folder / "net_g.pth")
    torch.save({"params": p_state}, folder / "net_p.pth")
    return folder / "net_g.pth", folder / "net_p.pth"


def test_third_party_and_official_checkpoints(testset_dir, tmp_path) -> None:
    gen = torch.Generator().manual_seed(0)
    rrdb = build_rrdb(num_feat=8, num_block=1)
    torch.save(rrdb.state_dict(), tmp_path / "RRDB_PSNR_x4.pth")
    net_g, net_p = _official_files(tmp_path, gen)
    methods = {
        "RRDB": Method.third_party(name="RRDB", path=tmp_path / "RRDB_PSNR_x4.pth"),
        "DASR": Method.official_dasr(net_g=net_g, net_p=net_p),
    }
    for name, method in methods.items():
        frame = ev.evaluate(method, testset_dir, levels=("weak",), device="cpu")
        means = _means(frame)
        metrics = {paper.METRIC_PSNR, paper.METRIC_SSIM} | (
            {paper.METRIC_V_MAE} if name == "DASR" else set()
        )
        assert set(means["metric"]) == metrics
        assert (means["n_images"] == 2).all() and means["value"].notna().all()
