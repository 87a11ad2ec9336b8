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

from dasrlib.experiments.ablations import ABLATION_NAMES, ABLATIONS, BASELINE, BASELINE_ABLATION
from dasrlib.experiments.cost import EXPERT_COST_METRICS as COST_METRICS
from dasrlib.io import read_image
from dasrlib.paper import METRIC_LPIPS, METRIC_PSNR, METRIC_SSIM

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
    assert full["variants"] == [*ABLATION_NAMES, BASELINE]
    assert (full["iterations"], full["batch_size"], full["patch_size"]) == (500000, 24, 256)
    assert full["out_dir"] == "results"


def test_cpu_scale_file_sets_every_notebook_parameter_and_states_its_scale():
    cpu = yaml.safe_load((NOTEBOOKS / "params" / "ablations_cpu.yaml").read_text())
    assert set(cpu) == _parameter_names()
    assert sorted(cpu["variants"]) == sorted([*ABLATION_NAMES, BASELINE])
    assert cpu["variants"][0] == "dasr"  # the reference trains first
    assert cpu["train_options"]["ema_decay"] < 0.999  # an EMA that follows 1000 steps
    assert (cpu["batch_size"], cpu["patch_size"], cpu["resume"]) == (16, 128, "auto")
    assert (cpu["train_options"]["num_feat"], cpu["train_options"]["num_block"]) == (32, 4)
    assert cpu["eval_sets"] == ["Set14", "B100"] and cpu["second_seed"] is not None
    assert cpu["out_dir"] == "results"


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
            "out_dir": str(out),
            "figure_path": str(out / "fig4.png"),
            "second_seed": 1,
        },
        cwd=str(NOTEBOOKS),
        kernel_name="python3",
        progress_bar=False,
    )
    rows = pd.read_csv(out / "ablations.csv", keep_default_na=False, na_values=[""])
    variants = [*ABLATIONS, BASELINE_ABLATION]
    side = json.loads((out / "ablations.json").read_text())
    runs = side["config"]["runs"]
    assert {key for key in runs if "@" not in key} == {*ABLATION_NAMES, BASELINE}
    again = {key for key in runs if "@" in key}  # the variants within the interval of (h), and (h)
    assert not again or "dasr@seed1" in again
    assert all(run["iteration"] == 2 and run["status"] == "finished" for run in runs.values())
    means = rows[rows["aggregate"] == "mean"]
    costs = rows[rows["aggregate"] == "cost"]
    assert len(means) == len(runs) * len(LEVELS) * 3
    assert set(means["seed"]) == ({0, 1} if again else {0})
    assert len(costs) == len(variants) * (len(COST_METRICS) + 1)  # + training it/s
    for variant in variants:
        own = means[(means["method"] == variant.name) & (means["seed"] == 0)]
        assert set(own["panel"]) == {variant.panel}
        for level in LEVELS:
            for metric in (METRIC_PSNR, METRIC_SSIM, METRIC_LPIPS):
                cell = own[(own["level"] == level) & (own["metric"] == metric)]
                assert len(cell) == 1, (variant.name, level, metric)
        psnr = own[own["metric"] == METRIC_PSNR]
        assert (psnr["n_images"] == 2).all() and psnr["value"].between(3, 60).all()
        lpips = own[own["metric"] == METRIC_LPIPS]
        assert lpips["value"].notna().all() or lpips["note"].str.startswith("n/a").all()
        cost = costs[costs["method"] == variant.name].set_index("metric")
        assert list(cost.index) == [*COST_METRICS, "train_it_per_s"]
        assert cost.loc["params_m", "value"] > 0 and cost.loc["gmacs", "value"] > 0
        assert cost.loc["latency_ms", "value"] > 0 and cost.loc["latency_ms", "level"] == "16x16"
        assert math.isnan(cost.loc["peak_mem_mb", "value"])  # CPU
        assert cost.loc["train_it_per_s", "value"] > 0
    relative = costs[costs["metric"] == "gmacs_vs_expert"].set_index("method")["value"]
    assert relative["dasr_moe"] > 1.5 * relative["dasr"]
    params = costs[costs["metric"] == "params_m"].set_index("method")["value"]
    assert params[BASELINE] < params["dasr_n3"] < params["dasr"] < params["dasr_n9"]
    pooled = rows[(rows["aggregate"] == "difference") & (rows["dataset"] == "all")]
    assert set(pooled[pooled["seed"] == 0]["method"]) == {v.name for v in variants} - {"dasr"}
    assert (pooled["ci95_low"] <= pooled["ci95_high"]).all()
    markdown = (out / "ablations.md").read_text()
    assert markdown.startswith("# Fig. 4 ablations at 8 channels, 1 blocks, LR patch 8")

    inits = {name: Path(run["init_from"]).name for name, run in runs.items()}
    edsr = {key for key in inits if key.startswith("dasr_edsr_m")}
    assert {inits[key] for key in edsr} == {"ablation_pretrain_edsr_m"}
    assert {v for k, v in inits.items() if k not in edsr} == {"ablation_pretrain_srresnet"}
    assert side["config"]["testsets"][0]["n_images"] == 2 and side["git_commit"]

    figure = read_image(out / "fig4.png").rgb
    assert figure.shape[-1] > figure.shape[-2] * 0.8 and float(figure.std()) > 0.05
