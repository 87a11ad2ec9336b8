"""The Fig. 4 ablations notebook runs under papermill with tiny parameters and writes every row."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from dasrlib.experiments.ablations import ABLATION_NAMES, ABLATIONS
from dasrlib.experiments.cost import EXPERT_COST_METRICS as COST_METRICS
from dasrlib.io import read_image
from dasrlib.paper import METRIC_LPIPS, METRIC_PSNR

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
LEVELS = ["bicubic", "weak", "standard", "severe"]


def _parameter_names() -> set[str]:
    notebook = nbformat.read(NOTEBOOKS / "ablations.ipynb", as_version=4)
    cells = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1
    tree = ast.parse(cells[0].source)
    assert all(isinstance(node, ast.Assign) for node in tree.body)  # literals only
    for node in tree.body:
        ast.literal_eval(node.value)
    return {node.targets[0].id for node in tree.body}


def test_full_budget_file_sets_every_notebook_parameter_and_nothing_else():
    full = yaml.safe_load((NOTEBOOKS / "params" / "ablations_full.yaml").read_text())
    assert set(full) == _parameter_names()
    assert full["variants"] == list(ABLATION_NAMES)
    assert (full["iterations"], full["batch_size"], full["patch_size"]) == (500000, 24, 256)
    assert full["csv_path"] == "results/ablations.csv"


@pytest.mark.notebook
@pytest.mark.slow
def test_ablations_notebook_writes_every_row_and_the_grid(tmp_path, make_image_file):
    papermill = pytest.importorskip("papermill")
    real = make_image_file("real/photo.png", width=40, height=36, seed=7)
    out = tmp_path / "out"
    papermill.execute_notebook(
        str(NOTEBOOKS / "ablations.ipynb"),
        str(tmp_path / "ablations.ipynb"),
        parameters={
            "iterations": 2,
            "pretrain_iterations": 1,
            "batch_size": 2,
            "patch_size": 32,
            "device": "cpu",
            "runs_dir": str(tmp_path / "runs"),
            "max_images": 2,
            "hr_crop": 48,
            "testset_dir": str(tmp_path / "sets"),
            "staging_dir": str(tmp_path / "staging"),
            "latency_size": [16, 16],
            "latency_repeats": 1,
            "latency_warmup": 0,
            "real_image": str(real.parent),
            "real_crop": 24,
            "csv_path": str(out / "ablations.csv"),
            "figure_path": str(out / "fig4.png"),
        },
        cwd=str(NOTEBOOKS),
        kernel_name="python3",
        progress_bar=False,
    )
    rows = pd.read_csv(out / "ablations.csv", keep_default_na=False, na_values=[""])
    assert len(rows) == len(ABLATIONS) * (len(LEVELS) * 2 + len(COST_METRICS))
    for variant in ABLATIONS:
        own = rows[rows["method"] == variant.name]
        assert set(own["panel"]) == {variant.panel}
        for level in LEVELS:
            for metric in (METRIC_PSNR, METRIC_LPIPS):
                cell = own[(own["level"] == level) & (own["metric"] == metric)]
                assert len(cell) == 1, (variant.name, level, metric)
        psnr = own[own["metric"] == METRIC_PSNR]
        assert (psnr["n_images"] == 2).all() and psnr["value"].between(3, 60).all()
        lpips = own[own["metric"] == METRIC_LPIPS]
        assert lpips["value"].notna().all() or lpips["note"].str.startswith("n/a").all()
        cost = own[own["dataset"] == "efficiency"].set_index("metric")
        assert list(cost.index) == list(COST_METRICS)
        assert cost.loc["params_m", "value"] > 0 and cost.loc["gmacs", "value"] > 0
        assert cost.loc["latency_ms", "value"] > 0 and cost.loc["latency_ms", "level"] == "16x16"
        assert math.isnan(cost.loc["peak_mem_mb", "value"])  # CPU
    relative = rows[rows["metric"] == "gmacs_vs_expert"].set_index("method")["value"]
    assert relative["dasr_moe"] > 1.5 * relative["dasr"]
    params = rows[rows["metric"] == "params_m"].set_index("method")["value"]
    assert params["dasr_n3"] < params["dasr"] < params["dasr_n9"]

    side = json.loads((out / "ablations.json").read_text())
    runs = side["config"]["runs"]
    assert set(runs) == set(ABLATION_NAMES)
    assert all(run["iteration"] == 2 and run["status"] == "finished" for run in runs.values())
    inits = {name: Path(run["init_from"]).name for name, run in runs.items()}
    assert inits["dasr_edsr_m"] == "ablation_pretrain_edsr_m"
    assert {v for k, v in inits.items() if k != "dasr_edsr_m"} == {"ablation_pretrain_srresnet"}
    assert side["config"]["testsets"]["n_images"] == 2 and side["git_commit"]

    figure = read_image(out / "fig4.png").rgb
    assert figure.shape[-1] > figure.shape[-2] * 0.8 and float(figure.std()) > 0.05
