"""Tables 1 and 2 notebooks run under papermill with tiny parameters and write complete tables."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import torchvision

from dasrlib import paper
from dasrlib.experiments.cost import REFERENCE_COST_METRICS
from dasrlib.io import write_png
from dasrlib.metrics import ALEXNET_CHECKPOINT_NAME
from dasrlib.models.checkpoints import save_weights
from dasrlib.models.dasr import DASR

pytestmark = [pytest.mark.notebook, pytest.mark.slow]

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
LEVELS = ["bicubic", "weak", "standard", "severe"]
SETS = ["Bicubic", "Level-I", "Level-II", "Level-III"]


def _images(folder: Path, count: int, size: tuple[int, int], seed: int) -> Path:
    gen = torch.Generator().manual_seed(seed)
    for index in range(count):
        coarse = torch.rand(1, 3, 6, 6, generator=gen)
        img = F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)[0]
        write_png(folder / f"img_{index}.png", img)
    return folder


@pytest.fixture(autouse=True)
def one_thread_kernel(monkeypatch) -> None:
    """One intra-op thread in the notebook kernel: tiny tensors on a shared 2-core runner are
    many times faster without thread hand-offs (the library itself never sets thread counts)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def _run(notebook: str, out: Path, parameters: dict) -> None:
    papermill = pytest.importorskip("papermill")
    papermill.execute_notebook(
        str(NOTEBOOKS / notebook),
        str(out / notebook),
        parameters=parameters,
        cwd=str(NOTEBOOKS),
        kernel_name="python3",
        progress_bar=False,
    )


def _check_quality_rows(rows: pd.DataFrame, methods: list[str]) -> None:
    means = rows[(rows["aggregate"] == "mean") & (rows["dataset"] != "efficiency")]
    for method in methods:
        for level in LEVELS:
            for metric in (paper.METRIC_PSNR, paper.METRIC_LPIPS):
                cell = means[
                    (means["method"] == method)
                    & (means["level"] == level)
                    & (means["metric"] == metric)
                ]
                assert len(cell) == 1, (method, level, metric)
    assert rows["n_images"].notna().all()


@pytest.fixture
def alexnet_cache(tmp_path, monkeypatch) -> None:
    """A random AlexNet where torchvision caches ImageNet weights (the kernel sees TORCH_HOME)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(
        torchvision.models.alexnet(weights=None).state_dict(), cache / ALEXNET_CHECKPOINT_NAME
    )


def test_table1_notebook(tmp_path, alexnet_cache) -> None:
    hr = _images(tmp_path / "hr", 2, (40, 48), seed=0)
    dasr = DASR(num_experts=2, num_feat=8, num_block=1, generator=torch.Generator())
    weights = save_weights(dasr, tmp_path / "dasr.safetensors")
    methods = {"Bicubic": "bicubic", "RRDB": None, "BSRGAN": None, "DASR": str(weights)}
    out = tmp_path / "out"
    _run(
        "table1.ipynb",
        tmp_path,
        {
            "hr_root": str(hr),
            "max_images": None,
            "testset_dir": str(tmp_path / "sets"),
            "staging_dir": str(tmp_path / "staging"),
            "device": "cpu",
            "methods": methods,
            "out_dir": str(out),
        },
    )
    rows = pd.read_csv(out / "table1.csv")
    _check_quality_rows(rows, list(methods))
    means = rows[rows["aggregate"] == "mean"]
    provided = means[means["method"].isin(["Bicubic", "DASR"])]
    assert (
        provided[provided["metric"].isin([paper.METRIC_PSNR, paper.METRIC_LPIPS])]["value"]
        .notna()
        .all()
    )
    assert (provided["n_images"] == 2).all()
    assert set(means[means["method"] == "DASR"]["metric"]) >= {paper.METRIC_V_MAE}
    missing = means[means["method"].isin(["RRDB", "BSRGAN"])]
    # why each cell is empty and how to fill it (where the weights are, where to put them)
    assert missing["note"].str.startswith("not provided; to fill: ").all()
    assert missing["value"].isna().all()
    side = json.loads((out / "table1.json").read_text())
    assert side["config"]["testsets"]["n_images"] == 2 and side["git_commit"]
    text = (out / "table1.md").read_text()
    for name in [*methods, *SETS]:
        assert f"| {name} |" in text or f" {name} |" in text
    assert text.count("not provided; to fill: ") == 2 * 4 * 2
    assert "https://github.com/cszn/KAIR/releases/download/v1.0/BSRGAN.pth" in text


def test_table2_notebook(tmp_path) -> None:
    train_hr = _images(tmp_path / "train", 2, (48, 48), seed=1)
    test_hr = _images(tmp_path / "test", 1, (32, 32), seed=2)
    methods = ["SRResNet", "EDSR", "RRDB", "SwinIR", "DASR"]
    out = tmp_path / "out"
    parameters = {
        "methods": methods,
        "data_root": str(train_hr),
        "iterations": 1,
        "batch_size": 1,
        "patch_size": 32,
        "dasr_pretrain_iterations": 1,
        "device": "cpu",
        "runs_dir": str(tmp_path / "runs"),
        "hr_root": str(test_hr),
        "max_images": None,
        "hr_crop": None,
        "testset_dir": str(tmp_path / "sets"),
        "staging_dir": str(tmp_path / "staging"),
        "latency_size": [8, 8],
        "out_dir": str(out),
    }
    _run("table2.ipynb", tmp_path, parameters)
    rows = pd.read_csv(out / "table2.csv")
    _check_quality_rows(rows, methods)
    cost = rows[rows["dataset"] == "efficiency"]
    for method in methods:
        for metric, _, _ in REFERENCE_COST_METRICS:
            for name in (metric, f"{metric}_vs_srresnet"):
                assert len(cost[(cost["method"] == method) & (cost["metric"] == name)]) == 1
    params = cost[cost["metric"] == "params_m"].set_index("method")["value"]
    assert params["RRDB"] > params["SwinIR"] > params["DASR"] > params["SRResNet"]
    ratio = cost[(cost["metric"] == "gmacs_256_vs_srresnet") & (cost["method"] == "SRResNet")]
    assert ratio["value"].iloc[0] == pytest.approx(1.0)
    assert (tmp_path / "runs").is_dir() and len(list((tmp_path / "runs").glob("*/run.json"))) == 6
    text = (out / "table2.md").read_text()
    assert text.splitlines()[0].startswith("# SMOKE TEST, not results")  # 1-iteration networks
    assert "## Cost" in text and "paper V100 113" in text
    for name in [*methods, *SETS]:
        assert f" {name} |" in text

    # Run again on the same runs folder: the finished run is loaded, not trained again.
    runs_before = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/run.json")}
    again = tmp_path / "again"
    again.mkdir()
    _run("table2.ipynb", again, {**parameters, "methods": ["SRResNet"], "out_dir": str(again)})
    executed = nbformat.read(again / "table2.ipynb", as_version=4)
    log = "".join(
        output.get("text", "") for cell in executed.cells for output in cell.get("outputs", [])
    )
    assert "table2_srresnet_" in log and "loaded, not trained again" in log
    assert " trained (" not in log
    assert {p: p.stat().st_mtime_ns for p in runs_before} == runs_before
