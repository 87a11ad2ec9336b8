"""Fig. 4 ablations: the variants as data, their training configs, cost and the grid figure."""

from __future__ import annotations

import json
import logging
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
        ablations.Ablation("edsr", "(x)", "plain")


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
    planned = ablations.plan(budget, pretrain_iterations=7, run_prefix="abl")
    per_variant = {"name", "stage", "init_from", *DEFAULTS}
    shared = None
    for variant in ABLATIONS:
        pretrain, own = planned[variant.name]
        config = to_dict(own)
        assert config["name"] == f"abl_{variant.name}"
        assert config["stage"] == "dasr" and config["init_from"] == pretrain.run.path
        assert {k: config[k] for k in DEFAULTS} == variant.options
        rest = {k: v for k, v in config.items() if k not in per_variant}
        shared = rest if shared is None else shared
        assert rest == shared
    assert shared["iterations"] == 3 and shared["seed"] == 5 and shared["perceptual_weight"] == 0


def test_pretraining_trains_the_plain_backbone_of_each_topology(tmp_path):
    planned = ablations.plan(_budget(tmp_path), pretrain_iterations=7, run_prefix="abl")
    edsr = to_dict(planned["dasr_edsr_m"][0])
    assert (edsr["stage"], edsr["backbone"], edsr["iterations"], edsr["name"]) == (
        "pretrain",
        "edsr",
        7,
        "abl_pretrain_edsr_m",
    )
    srresnet = to_dict(planned["dasr"][0])
    assert (srresnet["backbone"], srresnet["name"]) == ("srresnet", "abl_pretrain_srresnet")


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
def test_ablations_tabulate_quality_differences_and_cost_for_each_variant(
    tmp_path, make_image_file, caplog
):
    from dasrlib.metrics import LPIPSUnavailable
    from dasrlib.results import read_results
    from dasrlib.testsets import build_testsets

    for name in ("a", "b"):
        make_image_file(f"{name}/x.png", width=48, height=40, seed=3)
        make_image_file(f"{name}/y.png", width=40, height=40, seed=4)
        build_testsets(tmp_path / name, tmp_path / f"sets_{name}", levels=["bicubic", "severe"])
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
    planned = ablations.plan(
        budget,
        variants=["dasr_moe", "srresnet", "dasr"],
        pretrain_iterations=1,
        extra_seeds={"dasr_moe": [1], "dasr": [1]},
    )
    runs = run_plan(planned)

    def tabulate(levels=("bicubic", "severe")):
        return ablations.tabulate(
            runs,
            [tmp_path / "sets_a", tmp_path / "sets_b"],
            budget=budget,
            pretrain_iterations=1,
            out_dir=tmp_path / "out",
            levels=list(levels),
            lpips=LPIPSUnavailable("weights not found at /nowhere"),
            device="cpu",
            latency_size=16,
            latency_repeats=1,
            latency_warmup=0,
            pending=["dasr_n9"],
        )

    result = tabulate()
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
    assert {"panel", "seed", "aggregate", "ci95_low", "ci95_high", "note"} <= set(frame.columns)
    means = frame[frame["aggregate"] == "mean"]
    # 5 runs x 2 test sets x 2 levels x 3 metrics
    assert len(means) == 5 * 2 * 2 * 3
    assert set(means.loc[means["metric"] != "lpips_alex", "n_images"]) == {2}
    assert set(means["dataset"]) == {"a", "b"} and set(means["seed"]) == {1, 5}
    assert means[means["metric"] == "ssim_y"]["value"].between(0, 1).all()
    lpips = means[means["metric"] == "lpips_alex"]
    assert lpips["value"].isna().all() and lpips["note"].str.contains("/nowhere").all()
    costs = frame[frame["aggregate"] == "cost"]
    assert set(costs["method"]) == {"dasr_moe", "srresnet", "dasr"}  # the budget's seed only
    assert set(costs["metric"]) == {*EXPERT_COST_METRICS, "train_it_per_s"}
    speed = costs[costs["metric"] == "train_it_per_s"]["value"]
    assert (speed > 0).all()
    relative = costs[costs["metric"] == "gmacs_vs_expert"].set_index("method")["value"]
    assert relative["dasr_moe"] > 1.5 * relative["dasr"] and relative["srresnet"] == 1.0
    gaps = frame[frame["aggregate"] == "difference"]
    noise = gaps[(gaps["method"] == ablations.SEED_NOISE) & (gaps["metric"] == "psnr_y_db_vs_dasr")]
    assert len(noise) == 5 and set(noise["seed"]) == {1}  # (h) seed 1 minus seed 5
    gaps = gaps[gaps["method"] != ablations.SEED_NOISE]
    psnr_gaps = gaps[gaps["metric"] == "psnr_y_db_vs_dasr"]
    # dasr_moe at seeds 5 and 1, srresnet at seed 5: 2 x 2 cells + the pooled one each
    assert len(psnr_gaps) == 3 * 5 and (psnr_gaps["ci95_low"] <= psnr_gaps["value"]).all()
    pooled = psnr_gaps[psnr_gaps["dataset"] == "all"]
    assert set(pooled["n_images"]) == {4}  # two images in each of two test sets
    a = means[(means["dataset"] == "a") & (means["metric"] == "psnr_y_db")]
    a = a[(a["seed"] == 5) & (a["level"] == "severe")].set_index("method")["value"]
    cell = psnr_gaps[(psnr_gaps["dataset"] == "a") & (psnr_gaps["level"] == "severe")]
    cell = cell[(cell["seed"] == 5) & (cell["method"] == "dasr_moe")]["value"].iloc[0]
    assert cell == pytest.approx(a["dasr_moe"] - a["dasr"])
    inits = {v["init_from"] for v in sidecar["config"]["runs"].values()}
    assert len(inits) == 1 and inits.pop().endswith("ablation_pretrain_srresnet")
    assert sidecar["config"]["variants"]["dasr_moe"]["mixing"] == "outputs"
    assert sidecar["config"]["pending"] == ["dasr_n9"]
    ranked = result.tables[ablations.RANKED_TABLE].reset_index()
    assert sorted(zip(ranked["method"], ranked["seed"], strict=True)) == sorted(
        [("dasr", 5), ("dasr_moe", 5), ("srresnet", 5), ("dasr", 1), ("dasr_moe", 1)]
    )
    markdown = result.markdown_path.read_text()
    assert markdown.startswith("# Fig. 4 ablations at 8 channels, 1 blocks, LR patch 8")
    assert "not trained yet (the next budget continues them): dasr_n9" in markdown
    table = result.tables[ablations.ABLATIONS_TABLE]
    assert "psnr_y_db severe" in table.columns and "gmacs" in table.columns
    sr = ablations.super_resolve_variants(runs, torch.rand(3, 8, 8), device="cpu")
    assert list(sr) == ["dasr_moe", "srresnet", "dasr"] and sr["srresnet"].shape == (3, 32, 32)
    assert json.loads(result.csv_path.with_suffix(".json").read_text())["n_rows"] == len(frame)

    # A second table (a rerun, or after a second seed's runs) reuses every evaluation; the
    # latency is measured again.
    with caplog.at_level(logging.INFO, logger=ablations.logger.name):
        again = tabulate()
    assert caplog.text.count("reusing") == 5 * 2  # every run on both test sets
    quality = ["psnr_y_db", "ssim_y", "lpips_alex"]
    pd.testing.assert_frame_equal(
        result.rows[result.rows["metric"].isin(quality)].reset_index(drop=True),
        again.rows[again.rows["metric"].isin(quality)].reset_index(drop=True),
        check_like=True,
    )
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=ablations.logger.name):
        tabulate(levels=["severe"])  # another evaluation: nothing reused
    assert "reusing" not in caplog.text


def _image_rows(values: dict[str, list[float]], *, metric: str, dataset: str, level: str):
    return [
        {
            "method": method,
            "dataset": dataset,
            "level": level,
            "metric": metric,
            "image": f"im{i}",
            "value": v,
            "aggregate": "image",
        }
        for method, series in values.items()
        for i, v in enumerate(series)
    ]


def test_paired_rows_are_per_image_differences_to_h_with_t_intervals():
    rows = _image_rows(
        {"dasr": [1.0, 2.0, 3.0], "dasr_n3": [2.0, 3.0, 5.0]},
        metric="psnr_y_db",
        dataset="Set14",
        level="weak",
    )
    rows += _image_rows(
        {"dasr": [1.0, 1.0, 1.0], "dasr_n3": [1.0, 1.0, 4.0]},
        metric="psnr_y_db",
        dataset="Set14",
        level="severe",
    )
    gaps = ablations.paired_rows(pd.DataFrame(rows), seed=3).set_index(["level"])
    assert set(gaps["metric"]) == {"psnr_y_db_vs_dasr"} and set(gaps["seed"]) == {3}
    weak = gaps.loc["weak"]
    half = 4.302652729911275 * (1 / math.sqrt(3)) / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert weak["value"] == pytest.approx(4 / 3) and weak["n_images"] == 3
    assert weak["ci95_high"] - weak["value"] == pytest.approx(half)
    pooled = gaps.loc["all"]  # per image, the mean over the levels: diffs 0.5, 0.5, 2.5
    assert pooled["dataset"] == "all" and pooled["value"] == pytest.approx(3.5 / 3)
    assert pooled["n_images"] == 3


def _gap_row(method, metric, mean, low, high, seed=0):
    return {
        "method": method,
        "dataset": "all",
        "level": "all",
        "metric": f"{metric}_vs_dasr",
        "value": mean,
        "ci95_low": low,
        "ci95_high": high,
        "seed": seed,
    }


def test_the_ranking_says_which_of_the_papers_findings_hold_and_what_needs_a_second_seed():
    rows = [{"method": "dasr", "dataset": "all", "level": "all", "metric": "x", "seed": 0}]
    rows += [
        _gap_row("dasr_n9", "psnr_y_db", -0.01, -0.05, 0.03),  # similar: holds
        _gap_row("dasr_n9", "ssim_y", 0.0, -0.001, 0.001),
        _gap_row("dasr_n9", "lpips_alex", 0.001, -0.002, 0.004),
        _gap_row("dasr_dcd", "psnr_y_db", -0.3, -0.4, -0.2),  # worse: holds
        _gap_row("dasr_dcd", "ssim_y", -0.01, -0.02, 0.0),
        _gap_row("dasr_dcd", "lpips_alex", 0.01, 0.0, 0.02),
        _gap_row("srresnet", "psnr_y_db", 0.1, 0.05, 0.15),  # beats DASR: does not hold
        _gap_row("srresnet", "ssim_y", 0.0, -0.001, 0.001),
        _gap_row("srresnet", "lpips_alex", 0.0, -0.001, 0.001),
    ]
    rows += [
        {"method": m, "dataset": "efficiency", "level": "", "metric": metric, "value": v, "seed": 0}
        for m in ("dasr", "dasr_n9", "dasr_dcd", "srresnet")
        for metric, v in (("gmacs_vs_expert", 1.0), ("latency_ms", 5.0), ("train_it_per_s", 2.0))
    ]
    frame = pd.DataFrame(rows)
    table = ablations.ranked_table(frame, base_seed=0).reset_index()
    assert table["method"].tolist() == ["srresnet", "dasr", "dasr_n9", "dasr_dcd"]
    assert table["rank"].tolist() == [1, 2, 3, 4]
    holds = dict(zip(table["method"], table["holds"], strict=True))
    assert holds == {"srresnet": "no", "dasr": "reference", "dasr_n9": "yes", "dasr_dcd": "yes"}
    assert table.loc[3, "PSNR-Y vs (h), dB"] == "-0.300 [-0.400, -0.200]"
    assert ablations.second_seed_variants(frame, seed=0) == ["dasr_n9"]


def test_extra_seeds_reuse_the_pretraining_and_change_only_the_seed(tmp_path):
    budget = _budget(tmp_path)
    planned = ablations.plan(
        budget,
        variants=["dasr_n9", "dasr"],
        pretrain_iterations=4,
        extra_seeds={"dasr_n9": [1], "dasr": [1]},
    )
    assert list(planned) == ["dasr_n9", "dasr", "dasr_n9@seed1", "dasr@seed1"]
    base_pre, base = planned["dasr_n9"]
    pre, own = planned["dasr_n9@seed1"]
    assert pre == base_pre and own.run.name == "ablation_dasr_n9_seed1"
    assert own.seed == 1 and own.replace(seed=base.seed, name=base.run.name) == base
    assert ablations.split_run_key("dasr_n9@seed1") == ("dasr_n9", 1)
    with pytest.raises(ValueError, match="budget's own seed"):
        ablations.plan(budget, variants=["dasr"], pretrain_iterations=1, extra_seeds={"dasr": [5]})


def test_the_plain_baseline_continues_the_srresnet_pretraining(tmp_path):
    planned = ablations.plan(
        _budget(tmp_path), variants=["srresnet", "dasr"], pretrain_iterations=2
    )
    pre, baseline = planned["srresnet"]
    assert (baseline.stage, baseline.model.backbone) == ("baseline", "srresnet")
    assert baseline.model.init_from == pre.run.path == planned["dasr"][0].run.path
