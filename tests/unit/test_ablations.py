"""Fig. 4 ablations: the variants as data, their training configs, cost and the grid figure."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from dasrlib import viz
from dasrlib.config import ConfigError, to_dict
from dasrlib.experiments import ablations
from dasrlib.experiments.ablations import (
    ABLATION_NAMES,
    ABLATIONS,
    ablation,
    budget_config,
    load_real_image,
    pretrain_config,
    variant_config,
)
from dasrlib.experiments.cost import EXPERT_COST_METRICS, expert_cost_rows
from dasrlib.experiments.runs import run_plan
from dasrlib.io import read_image
from dasrlib.models.dasr import DASR, DASR_VARIANTS
from dasrlib.profiling import count_parameters

TINY = {"num_feat": 8, "num_block": 1, "predictor_feat": 8}
EXPECTED = {
    "(a)": ("dasr_n3", {"num_experts": 3}),
    "(b)": ("dasr_n9", {"num_experts": 9}),
    "(c)": ("dasr_sigmoid", {"weighting": "sigmoid"}),
    "(d)": ("dasr_moe", {"mixing": "outputs"}),
    "(e)": ("dasr_mapping", {"mixing": "single_expert_mapping"}),
    "(f)": ("dasr_dcd", {"mixing": "dcd"}),
    "(g)": ("dasr_edsr_m", {"backbone": "edsr_m"}),
    "(h)": ("dasr", {}),
}
DEFAULTS = {"num_experts": 5, "backbone": "srresnet", "weighting": "linear", "mixing": "weights"}


def test_the_eight_panels_of_fig4_in_order_with_their_options():
    assert [a.panel for a in ABLATIONS] == list(EXPECTED)
    assert set(ABLATION_NAMES) == set(DASR_VARIANTS)
    for variant in ABLATIONS:
        name, changes = EXPECTED[variant.panel]
        assert variant.name == name
        assert variant.options == {**DEFAULTS, **changes}
        assert ablations.FIG4_TITLES[name].startswith(variant.panel)


def test_unknown_variants_are_rejected_by_name():
    with pytest.raises(ValueError, match="dasr_n4"):
        ablation("dasr_n4")
    with pytest.raises(ValueError, match="not a DASR variant"):
        ablations.Ablation("srresnet", "(x)", "plain")


@pytest.mark.parametrize("variant", ABLATIONS, ids=ABLATION_NAMES)
def test_each_variant_builds_trains_one_step_and_reports_its_cost(variant, generator):
    model = DASR(**variant.options, **TINY, generator=generator)
    assert model.num_experts == variant.options["num_experts"]
    lr = torch.rand(2, 3, 12, 12, generator=generator)
    hr = torch.rand(2, 3, 48, 48, generator=generator)
    out = model(lr)
    assert out.sr.shape == (2, 3, 48, 48)
    assert out.a.shape == (2, variant.options["num_experts"])
    if variant.options["weighting"] == "sigmoid":
        assert bool(((out.a > 0) & (out.a < 1)).all())
    F.l1_loss(out.sr, hr).backward()
    for part in (model.experts, model.weighting, model.predictor):
        grads = [p.grad for p in part.parameters()]
        assert grads and all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert any(float(p.grad.abs().sum()) > 0 for p in model.experts.parameters())

    rows = expert_cost_rows(
        variant.name, model.eval(), latency_size=16, device=torch.device("cpu"), repeats=1, warmup=0
    )
    by_metric = {row["metric"]: row for row in rows}
    assert list(by_metric) == list(EXPERT_COST_METRICS)
    assert by_metric["params_m"]["value"] == pytest.approx(count_parameters(model) / 1e6)
    assert by_metric["gmacs"]["value"] > 0 and by_metric["gmacs"]["level"] == "256x256"
    assert by_metric["gmacs_vs_expert"]["value"] > 0
    assert by_metric["latency_ms"]["value"] > 0 and by_metric["latency_ms"]["level"] == "16x16"
    assert math.isnan(by_metric["peak_mem_mb"]["value"])  # CUDA only
    assert by_metric["peak_mem_mb"]["note"].startswith("n/a")
    assert all(r["method"] == variant.name and r["dataset"] == "efficiency" for r in rows)
    assert all(math.isnan(r["paper_value"]) for r in rows)  # not the paper's size


def _paper_size_costs(name: str) -> dict[str, dict]:
    model = DASR(**DASR_VARIANTS[name], generator=torch.Generator().manual_seed(0)).eval()
    rows = expert_cost_rows(
        name, model, latency_size=8, device=torch.device("cpu"), repeats=1, warmup=0
    )
    return {row["metric"]: row for row in rows}


def test_classical_moe_costs_n_experts_while_dasr_costs_one():
    """GMACs at 256x256 of paper-size variants, relative to one SRResNet expert (166 GMACs)."""
    dasr, moe, n9 = (_paper_size_costs(n) for n in ("dasr", "dasr_moe", "dasr_n9"))
    # P adds ~0.11 of an expert (18 vs 166 GMACs at 256x256); the mixing is negligible.
    assert 1.0 < dasr["gmacs_vs_expert"]["value"] < 1.2
    assert 1.0 < n9["gmacs_vs_expert"]["value"] < 1.2  # independent of N
    assert 5.0 < moe["gmacs_vs_expert"]["value"] < 5.2  # every expert runs
    assert moe["gmacs"]["value"] > 4.5 * dasr["gmacs"]["value"]
    assert n9["params_m"]["value"] > dasr["params_m"]["value"] == pytest.approx(8.06, abs=0.01)
    # Table 2's DASR (8.07 M, 184 GMACs) is the reference of the default variant only.
    assert dasr["gmacs"]["value"] == pytest.approx(184, rel=0.01)
    assert (dasr["params_m"]["paper_value"], dasr["gmacs"]["paper_value"]) == (8.07, 184)
    assert dasr["gmacs_vs_expert"]["paper_value"] == pytest.approx(184 / 166)
    assert math.isnan(moe["gmacs"]["paper_value"]) and math.isnan(n9["params_m"]["paper_value"])


def _budget(tmp_path: Path, **overrides) -> object:
    return budget_config(
        iterations=3,
        batch_size=2,
        patch_size=32,
        seed=5,
        device="cpu",
        data_root=None,
        out_dir=str(tmp_path / "runs"),
        overrides={"num_feat": 8, "num_block": 1, "predictor_feat": 8, **overrides},
    )


def test_every_variant_shares_the_budget_and_differs_only_in_its_options(tmp_path):
    budget = _budget(tmp_path, perceptual_weight=0.0)
    per_variant = {"name", "stage", "init_from", *DEFAULTS}
    shared = None
    for variant in ABLATIONS:
        config = to_dict(variant_config(budget, variant, init_from="runs/x", run_prefix="abl"))
        assert config["name"] == f"abl_{variant.name}"
        assert config["stage"] == "dasr" and config["init_from"] == "runs/x"
        assert {k: config[k] for k in DEFAULTS} == variant.options
        rest = {k: v for k, v in config.items() if k not in per_variant}
        shared = rest if shared is None else shared
        assert rest == shared
    assert shared["iterations"] == 3 and shared["seed"] == 5 and shared["perceptual_weight"] == 0


def test_pretraining_trains_the_plain_backbone_of_each_topology(tmp_path):
    budget = _budget(tmp_path)
    edsr = to_dict(pretrain_config(budget, "edsr_m", iterations=7, run_prefix="abl"))
    assert (edsr["stage"], edsr["backbone"], edsr["iterations"], edsr["name"]) == (
        "pretrain",
        "edsr",
        7,
        "abl_pretrain_edsr_m",
    )
    srresnet = to_dict(pretrain_config(budget, "srresnet", iterations=1, run_prefix="abl"))
    assert srresnet["backbone"] == "srresnet"
    with pytest.raises(ValueError, match="rrdb"):
        pretrain_config(budget, "rrdb", iterations=1, run_prefix="abl")


def test_budget_rejects_variant_fields_and_unknown_keys(tmp_path):
    with pytest.raises(ValueError, match="num_experts"):
        _budget(tmp_path, num_experts=3)
    with pytest.raises(ConfigError, match="num_feets"):
        _budget(tmp_path, num_feets=3)


def test_variant_lists_must_name_known_variants_once(tmp_path):
    budget = _budget(tmp_path)
    with pytest.raises(ValueError, match="twice"):
        ablations.plan(budget, variants=["dasr", "dasr"], pretrain_iterations=0)
    with pytest.raises(ValueError, match="no variants"):
        ablations.plan(budget, variants=[], pretrain_iterations=0)


def test_real_image_from_a_file_a_folder_or_the_embedded_photos(make_image_file, tmp_path):
    make_image_file("real/b.png", width=40, height=30, seed=1)
    first = make_image_file("real/a.png", width=20, height=24, seed=2)
    picked = load_real_image(tmp_path / "real")
    assert picked.name == "a" and picked.image.shape == (3, 24, 20)
    assert torch.equal(picked.image, read_image(first).rgb)
    named = load_real_image(tmp_path / "real", name="b", crop=16)
    assert named.name == "b" and named.image.shape == (3, 16, 16)
    assert torch.equal(named.image, read_image(tmp_path / "real/b.png").rgb[:, 7:23, 12:28])
    assert load_real_image(first).source == str(first)
    with pytest.raises(FileNotFoundError, match="'c'"):
        load_real_image(tmp_path / "real", name="c")
    fallback = load_real_image(tmp_path / "missing", crop=32)
    assert fallback.image.shape == (3, 32, 32) and "missing" not in fallback.source


def test_fig4_grid_writes_one_panel_per_variant_plus_the_input(tmp_path, generator):
    lr = torch.rand(3, 8, 10, generator=generator)
    outputs = {name: torch.rand(3, 32, 40, generator=generator) for name in ABLATION_NAMES}
    path = viz.fig4_grid(lr, outputs, tmp_path / "fig4.png", titles=ablations.FIG4_TITLES, dpi=40)
    image = read_image(path).rgb
    assert image.shape[-1] == 3 * 3 * 40  # three panels of 3 inches across at 40 dpi
    assert float(image.std()) > 0.05
    with pytest.raises(ValueError, match="dasr_moe"):
        bad = {"dasr": torch.rand(3, 32, 40), "dasr_moe": torch.rand(3, 30, 40)}
        viz.fig4_grid(lr, bad, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="multiple"):
        viz.fig4_grid(lr, {"dasr": torch.rand(3, 30, 40)}, tmp_path / "bad.png")


@pytest.mark.slow
def test_ablations_tabulate_quality_and_cost_rows_for_each_variant(tmp_path, make_image_file):
    from dasrlib.metrics import LPIPSUnavailable
    from dasrlib.results import read_results
    from dasrlib.testsets import build_testsets

    make_image_file("hr/x.png", width=48, height=40, seed=3)
    build_testsets(tmp_path / "hr", tmp_path / "sets", levels=["bicubic", "severe"], seed=0)
    budget = _budget(
        tmp_path,
        perceptual_weight=0.0,
        adversarial_weight=0.0,
        val_images=1,
        val_crop=32,
        queue_size=0,
        progress=False,
    )
    budget = budget.replace(iterations=2)
    runs = run_plan(ablations.plan(budget, variants=["dasr_moe", "dasr"], pretrain_iterations=1))
    result = ablations.tabulate(
        runs,
        tmp_path / "sets",
        budget=budget,
        pretrain_iterations=1,
        csv_path=tmp_path / "out" / "ablations.csv",
        levels=["bicubic", "severe"],
        lpips=LPIPSUnavailable("weights not found at /nowhere"),
        device="cpu",
        latency_size=16,
        latency_repeats=1,
        latency_warmup=0,
    )
    frame, sidecar = read_results(result.csv_path)
    assert list(frame.columns[:7]) == [
        "method",
        "dataset",
        "level",
        "metric",
        "value",
        "n_images",
        "paper_value",
    ]
    assert {"panel", "note"} <= set(frame.columns)
    assert len(frame) == 2 * (2 * 2 + len(EXPERT_COST_METRICS))
    psnr = frame[frame["metric"] == "psnr_y_db"]
    assert set(psnr["n_images"]) == {1} and psnr["value"].between(5, 60).all()
    lpips = frame[frame["metric"] == "lpips_alex"]
    assert lpips["value"].isna().all() and lpips["note"].str.contains("/nowhere").all()
    dasr_paper = psnr[psnr["method"] == "dasr"].set_index("level")["paper_value"]
    assert dasr_paper["bicubic"] == 28.55 and dasr_paper["severe"] == 23.93
    assert set(frame[frame["method"] == "dasr_moe"]["panel"]) == {"(d)"}
    relative = frame[frame["metric"] == "gmacs_vs_expert"].set_index("method")["value"]
    assert relative["dasr_moe"] > 1.5 * relative["dasr"]
    # one pretraining shared by both variants
    inits = {v["init_from"] for v in sidecar["config"]["runs"].values()}
    assert len(inits) == 1 and inits.pop().endswith("ablation_pretrain_srresnet")
    assert sidecar["config"]["variants"]["dasr_moe"]["mixing"] == "outputs"
    table = result.tables[ablations.ABLATIONS_TABLE]
    assert list(table.index.get_level_values("method")) == ["dasr_moe", "dasr"]
    assert "psnr_y_db severe" in table.columns and "gmacs" in table.columns
    assert isinstance(table, pd.DataFrame)
    assert "| (d) | dasr_moe |" in result.markdown_path.read_text()
    sr = ablations.super_resolve_variants(runs, torch.rand(3, 8, 8), device="cpu")
    assert list(sr) == ["dasr_moe", "dasr"] and sr["dasr"].shape == (3, 32, 32)
    assert json.loads(result.csv_path.with_suffix(".json").read_text())["n_rows"] == len(frame)
