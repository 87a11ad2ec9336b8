"""Fig. 4 ablations (Sec. 4.5) as numbers as well as pictures.

The paper shows its ablations only as one real image under each variant. Here every variant is
trained with one shared budget, evaluated on the four seeded test sets (levels) of one or more
evaluation sets (PSNR-Y, SSIM-Y, LPIPS), compared with (h) image by image, profiled
(parameters, GMACs, latency, training speed), and the same real image is super-resolved by each
for the Fig. 4 grid (`write_fig4`: the inference here, the drawing `dasrlib.viz.fig4_grid`).

The experiment shape (`dasrlib.experiments`): `plan` says what to train, the one runner
`dasrlib.experiments.runs.run_plan` trains or reuses it, and `tabulate` turns the trained runs
and the test sets into the results table.

The variants are configurations of the one `DASR` class: their model options are the entries of
`dasrlib.models.dasr.DASR_VARIANTS`; `ABLATIONS` adds the paper's panel letter and a caption.

    (a) N = 3            (b) N = 9              (c) sigmoid after A    (d) classical MoE
    (e) one expert +     (f) DCD (Li et al.,    (g) EDSR-M backbone    (h) DASR, N = 5
        mapping matrix       ICLR 2021)

The shared budget (`budget_config`): the same data, seed, iterations, batch, patch size and loss
weights for every variant, and the same initialisation: one backbone network pretrained with the
pixel loss for `pretrain_iterations` (Sec. 4.1), copied into the experts of every variant on that
backbone (one pretraining for SRResNet, one for EDSR-M). The runs are planned, named
(``<run_prefix>_<variant>``, ``<run_prefix>_pretrain_<backbone>``) and reused by the runner of
`dasrlib.experiments.runs`, as Table 2's are.

Beside the eight panels, ``srresnet`` (`BASELINE_ABLATION`, N = 1) continues the same SRResNet
pretraining with the pixel loss for as many iterations: the baseline every variant must beat.
`plan(extra_seeds=...)` adds runs with another training seed from the same pretraining, for the
variants a first seed cannot separate from (h) (`second_seed_variants`).

`tabulate` writes ``ablations.csv`` in long format (STYLE point 8) with ``panel``, ``seed`` and
``aggregate`` columns: per run and test set the per-image and mean PSNR-Y, SSIM-Y and LPIPS
(dataset = the test sets' source, level = the test set); per variant the cost rows of
`dasrlib.experiments.cost.EXPERT_COST_METRICS` and its training speed (dataset ``efficiency``);
and each variant minus (h) of the same seed, paired per image, per test set and level and pooled
over all of them, with ``ci95_low`` / ``ci95_high`` (`paired_rows`). Its JSON sidecar records
the budget, variants, each run's folder, initialisation and wall time, test sets and device;
``ablations.md`` states the scale in its first line, ranks the variants (`ranked_table`) beside
the paper's finding for each and whether its prediction holds here (`FINDINGS`), then the means
(`dasrlib.tables.wide_table`).
"""

from __future__ import annotations

import inspect
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from dasrlib.config import to_dict
from dasrlib.data import EmbeddedPhotos, list_image_files
from dasrlib.device import resolve_device
from dasrlib.evaluate import evaluate, lpips_description, paired_differences
from dasrlib.experiments.cost import GMACS_SIZE, expert_cost_rows, height_width
from dasrlib.experiments.runs import (
    NetworkRun,
    Plan,
    Pretraining,
    RunNaming,
    TrainedRun,
    as_train_config,
    plan_runs,
)
from dasrlib.io import file_sha256, read_image
from dasrlib.methods import Method, network_upscaler
from dasrlib.metrics import LPIPSMetric, LPIPSUnavailable
from dasrlib.models import backbones
from dasrlib.models.checkpoints import load_model
from dasrlib.models.dasr import DASR, DASR_VARIANTS, DASRInference
from dasrlib.paper import LEVELS, METRIC_LPIPS, METRIC_PSNR, METRIC_SSIM, PAPER_TABLE2
from dasrlib.results import (
    EFFICIENCY_DATASET,
    RESULT_COLUMNS,
    project_path,
    read_results,
    run_metadata,
    write_results,
)
from dasrlib.tables import TableResult, wide_table, write_table
from dasrlib.testsets import testset_summary
from dasrlib.train.config import TrainConfig, config_from_parameters
from dasrlib.train.state import RunRecord
from dasrlib.viz import fig4_grid

__all__ = [
    "ABLATIONS",
    "ABLATIONS_TABLE",
    "ABLATION_NAMES",
    "BASELINE",
    "BASELINE_ABLATION",
    "FIG4_TITLES",
    "FINDINGS",
    "RANKED_TABLE",
    "SEED_NOISE",
    "Ablation",
    "Finding",
    "Gap",
    "RealImage",
    "ablation",
    "budget_config",
    "diff_metric",
    "load_real_image",
    "paired_rows",
    "plan",
    "ranked_table",
    "run_key",
    "scale_description",
    "second_seed_variants",
    "training_speed",
    "split_run_key",
    "super_resolve_variants",
    "tabulate",
    "write_fig4",
]

logger = logging.getLogger(__name__)

BASELINE = "srresnet"
"""The name of the N = 1 run (`BASELINE_ABLATION`)."""

# The DASR fields a variant may set, with the DASR defaults they take when it does not.
_VARIANT_FIELDS: tuple[str, ...] = ("num_experts", "backbone", "weighting", "mixing")
_DASR_DEFAULTS: dict[str, Any] = {
    name: inspect.signature(DASR).parameters[name].default for name in _VARIANT_FIELDS
}


@dataclass(frozen=True)
class Ablation:
    """One panel of Fig. 4: `name` is a `DASR_VARIANTS` key (the ``method`` column)."""

    name: str
    panel: str
    caption: str

    def __post_init__(self) -> None:
        if self.name == BASELINE:
            return
        if self.name not in DASR_VARIANTS:
            raise ValueError(f"{self.name!r} is not a DASR variant; known: {list(DASR_VARIANTS)}")
        unknown = set(DASR_VARIANTS[self.name]) - set(_VARIANT_FIELDS)
        if unknown:
            raise ValueError(
                f"variant {self.name!r} sets {sorted(unknown)}, which the ablation training "
                f"cannot vary (only {list(_VARIANT_FIELDS)})"
            )

    @property
    def options(self) -> dict[str, Any]:
        """Every variant field (num_experts, backbone, weighting, mixing) of this variant."""
        if self.name == BASELINE:
            return {"num_experts": 1, "backbone": "srresnet"}
        return {**_DASR_DEFAULTS, **DASR_VARIANTS[self.name]}

    @property
    def fields(self) -> dict[str, Any]:
        """The `TrainConfig` fields of its run: stage dasr and the options, or the baseline."""
        if self.name == BASELINE:
            return {"stage": "baseline", "backbone": "srresnet"}
        return {"stage": "dasr", **self.options}

    @property
    def title(self) -> str:
        """Figure caption: ``"(a) N = 3"``."""
        return f"{self.panel} {self.caption}"


ABLATIONS: tuple[Ablation, ...] = (
    Ablation("dasr_n3", "(a)", "N = 3"),
    Ablation("dasr_n9", "(b)", "N = 9"),
    Ablation("dasr_sigmoid", "(c)", "sigmoid after A"),
    Ablation("dasr_moe", "(d)", "classical MoE"),
    Ablation("dasr_mapping", "(e)", "1 expert + mapping"),
    Ablation("dasr_dcd", "(f)", "DCD"),
    Ablation("dasr_edsr_m", "(g)", "EDSR-M backbone"),
    Ablation("dasr", "(h)", "DASR (N = 5)"),
)
"""The eight panels of Fig. 4, in the paper's order."""

ABLATION_NAMES: tuple[str, ...] = tuple(a.name for a in ABLATIONS)

BASELINE_ABLATION = Ablation(BASELINE, "(N = 1)", "plain SRResNet")
"""N = 1: the plain SRResNet continued from the same pretraining with the pixel loss for as many
iterations as the variants (the Table 2 comparison at equal iterations)."""

FIG4_TITLES: dict[str, str] = {a.name: a.title for a in (*ABLATIONS, BASELINE_ABLATION)}
"""Panel titles of the Fig. 4 grid by variant name (`dasrlib.viz.fig4_grid`)."""


def ablation(name: str) -> Ablation:
    """The `Ablation` called `name`; ValueError listing the known names otherwise."""
    for item in (*ABLATIONS, BASELINE_ABLATION):
        if item.name == name:
            return item
    known = [*ABLATION_NAMES, BASELINE]
    raise ValueError(f"unknown ablation {name!r}; expected one of {known}")


# ---------------------------------------------------------------------------------------------
# Training with one shared budget
# ---------------------------------------------------------------------------------------------


def budget_config(
    *,
    iterations: int,
    batch_size: int,
    patch_size: int,
    seed: int,
    device: str,
    data_root: str | None,
    out_dir: str,
    resume: str = "auto",
    overrides: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """The budget every variant shares, as a `TrainConfig` (stage and model fields set later).

    `overrides` sets any other `TrainConfig` field by name (num_feat, num_block, loss weights,
    val_images, ...); an unknown name raises `dasrlib.config.ConfigError`. Setting a variant
    field there (num_experts, backbone, weighting, mixing) is an error: the variants set them.
    """
    overrides = dict(overrides or {})
    clash = sorted(set(overrides) & {*_VARIANT_FIELDS, "stage", "name", "init_from"})
    if clash:
        raise ValueError(f"overrides {clash} are set per variant by the ablation runner")
    values = {
        "iterations": iterations,
        "batch_size": batch_size,
        "patch_size": patch_size,
        "seed": seed,
        "device": device,
        "data_root": data_root,
        "out_dir": out_dir,
        "resume": resume,
        **overrides,
    }
    return config_from_parameters(values)


def _pretraining(backbone: str) -> Pretraining:
    """The pretraining of the plain network a DASR expert topology copies: its backbone entry
    (`dasrlib.models.backbones`; ``edsr_m`` pretrains ``edsr``)."""
    if backbone not in backbones.expert_names():
        known = list(backbones.expert_names())
        raise ValueError(f"unknown backbone {backbone!r}; expected one of {known}")
    return Pretraining(role=f"pretrain_{backbone}", backbone=backbones.backbone(backbone).name)


def _network(variant: Ablation) -> NetworkRun:
    """A variant as a run of `dasrlib.experiments.runs`: stage dasr, its options, its
    backbone's pretraining."""
    return NetworkRun(
        role=variant.name,
        fields=variant.fields,
        pretraining=_pretraining(variant.options["backbone"]),
    )


def _selected(variants: Sequence[str]) -> list[Ablation]:
    chosen = [ablation(name) for name in variants]
    if not chosen:
        raise ValueError("no variants to run")
    duplicates = sorted({a.name for a in chosen if chosen.count(a) > 1})
    if duplicates:
        raise ValueError(f"variants listed twice: {duplicates}")
    return chosen


def run_key(name: str, seed: int | None = None) -> str:
    """A variant's key in a plan: its name (the budget's seed), ``<name>@seed<seed>`` otherwise."""
    return name if seed is None else f"{name}@seed{seed}"


def split_run_key(key: str) -> tuple[str, int | None]:
    """(variant name, extra seed or None) of a `run_key`."""
    name, _, seed = key.partition("@seed")
    return name, (int(seed) if seed else None)


def plan(
    budget: TrainConfig | Mapping[str, Any],
    *,
    variants: Sequence[str] = ABLATION_NAMES,
    pretrain_iterations: int,
    run_prefix: str = "ablation",
    extra_seeds: Mapping[str, Sequence[int]] | None = None,
) -> Plan:
    """What the ablations train: every variant with the shared `budget` (`budget_config`).

    With `pretrain_iterations` > 0, each expert topology the variants use is first pretrained
    once with the pixel loss and every variant on it starts from that network (the paper's
    initialisation). With 0, variants start from random experts (logged: known to diverge at
    the paper's scale). Runs are named ``<run_prefix>_<variant>`` and
    ``<run_prefix>_pretrain_<backbone>``; `dasrlib.experiments.runs.run_plan` trains or reuses them.
    `extra_seeds` (variant -> seeds) adds runs of those variants with another training seed
    (data stream and initialisation noise), from the same pretraining: keys
    ``<variant>@seed<seed>`` (`run_key`), run folders ``<run_prefix>_<variant>_seed<seed>``.
    """
    chosen = _selected(variants)
    budget = as_train_config(budget)
    naming = RunNaming(prefix=run_prefix)
    result = plan_runs(
        budget,
        {variant.name: _network(variant) for variant in chosen},
        pretrain_iterations=pretrain_iterations,
        naming=naming,
    )
    for name, seeds in (extra_seeds or {}).items():
        network = _network(ablation(name))
        for seed in seeds:
            if seed == budget.seed:
                raise ValueError(f"extra seed {seed} of {name} is the budget's own seed")
            key = run_key(name, seed)
            reseeded = NetworkRun(f"{name}_seed{seed}", network.fields, network.pretraining)
            stages = plan_runs(
                budget, {key: reseeded}, pretrain_iterations=pretrain_iterations, naming=naming
            )[key]
            stages[-1] = stages[-1].replace(seed=seed)  # the pretraining stays the shared one
            result[key] = stages
    return result


# ---------------------------------------------------------------------------------------------
# Tabulation: quality and cost rows
# ---------------------------------------------------------------------------------------------

ABLATIONS_TABLE = "Mean PSNR-Y (dB), SSIM-Y and LPIPS per test set; cost per variant"
RANKED_TABLE = "Ranked by the paired PSNR-Y difference to (h), all test sets and levels"
"""The headings of `tabulate`'s tables (`ranked_table`; `dasrlib.tables.wide_table`)."""

QUALITY = (METRIC_PSNR, METRIC_SSIM, METRIC_LPIPS)
REFERENCE = "dasr"
"""The variant every other is compared with, image by image: (h), DASR with N = 5."""
POOLED = "all"
"""The ``dataset`` and ``level`` of the differences pooled over every test set and level."""
SEED_NOISE = "dasr_other_seed"
"""The ``method`` of (h) at an extra seed minus (h) at the budget's seed, paired per image: the
seed-to-seed noise floor the differences to (h) are read against."""
TRAIN_SPEED = "train_it_per_s"
"""The cost row of training speed (`training_speed`: the median over metrics.csv rows)."""


def diff_metric(metric: str) -> str:
    """The metric name of paired differences to (h): ``<metric>_vs_dasr``."""
    return f"{metric}_vs_{REFERENCE}"


@dataclass(frozen=True)
class Gap:
    """A paired mean difference to (h) with its 95 % confidence interval."""

    mean: float
    low: float
    high: float

    def cell(self, digits: int) -> str:
        """``+0.123 [+0.050, +0.196]``, or n/a."""
        if math.isnan(self.mean):
            return "n/a"
        return f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"

    @property
    def above(self) -> bool:
        return self.low > 0

    @property
    def below(self) -> bool:
        return self.high < 0

    @property
    def includes_zero(self) -> bool:
        return self.low <= 0 <= self.high


NO_GAP = Gap(math.nan, math.nan, math.nan)


@dataclass(frozen=True)
class Finding:
    """What Sec. 4.5 says of a variant, what that predicts for the numbers here (PSNR-Y, SSIM-Y
    higher is better, LPIPS lower), and the test of that prediction."""

    paper: str
    expected: str
    uses: tuple[str, ...]
    """The metrics the prediction is about (quality metrics, ``gmacs_vs_expert``); without a
    number for one of them it is n/a."""
    holds: Callable[[dict[str, Gap], float], bool]
    """(pooled gaps by metric, GMACs relative to one expert) -> whether the prediction holds."""


_MOE_EXPERTS = ablation("dasr_moe").options["num_experts"]

FINDINGS: dict[str, Finding] = {
    "dasr_n3": Finding(
        "relatively smooth results (fewer details than N = 5)",
        "LPIPS above (h)",
        (METRIC_LPIPS,),
        lambda g, _: g[METRIC_LPIPS].above,
    ),
    "dasr_n9": Finding(
        "similar quality to N = 5",
        "PSNR-Y and LPIPS intervals include 0",
        (METRIC_PSNR, METRIC_LPIPS),
        lambda g, _: g[METRIC_PSNR].includes_zero and g[METRIC_LPIPS].includes_zero,
    ),
    "dasr_sigmoid": Finding(
        "a sigmoid in A cannot improve the performance",
        "PSNR-Y not above (h), LPIPS not below",
        (METRIC_PSNR, METRIC_LPIPS),
        lambda g, _: not g[METRIC_PSNR].above and not g[METRIC_LPIPS].below,
    ),
    "dasr_moe": Finding(
        "lacks fine details, at N times the cost",
        "LPIPS above (h) and GMACs at least 0.8 N x one expert",
        (METRIC_LPIPS, "gmacs_vs_expert"),
        lambda g, ratio: g[METRIC_LPIPS].above and ratio >= 0.8 * _MOE_EXPERTS,
    ),
    "dasr_mapping": Finding(
        "dynamic convolution with a mapping matrix: performance drops (artifacts)",
        "PSNR-Y below (h) or LPIPS above",
        (METRIC_PSNR, METRIC_LPIPS),
        lambda g, _: g[METRIC_PSNR].below or g[METRIC_LPIPS].above,
    ),
    "dasr_dcd": Finding(
        "dynamic convolution decomposition: performance drops",
        "PSNR-Y below (h) or LPIPS above",
        (METRIC_PSNR, METRIC_LPIPS),
        lambda g, _: g[METRIC_PSNR].below or g[METRIC_LPIPS].above,
    ),
    "dasr_edsr_m": Finding(
        "satisfactory quality: DASR generalises to another backbone",
        "PSNR-Y not below (h)",
        (METRIC_PSNR,),
        lambda g, _: not g[METRIC_PSNR].below,
    ),
    BASELINE: Finding(
        "DASR beats its backbone trained on the same degradations (Table 2)",
        "PSNR-Y below (h)",
        (METRIC_PSNR,),
        lambda g, _: g[METRIC_PSNR].below,
    ),
}
"""Sec. 4.5 (and Table 2 for N = 1), one entry per variant other than (h)."""


def _quality_rows(
    variant: Ablation,
    model: nn.Module,
    weights: Path,
    testset_dir: Path,
    *,
    levels: Sequence[str],
    device: torch.device,
    lpips: LPIPSMetric | LPIPSUnavailable | None,
) -> pd.DataFrame:
    """Per-image and mean PSNR-Y, SSIM-Y and LPIPS of one trained variant on one test set
    (`dasrlib.evaluate.evaluate`)."""
    method = Method.checkpoint(
        name=variant.name, path=weights, paper_name="DASR" if variant.name == "dasr" else None
    )
    frame = evaluate(
        method,
        testset_dir,
        levels=levels,
        device=device,
        lpips=lpips,
        paper=PAPER_TABLE2,
        upscaler=network_upscaler(model),
    )
    return frame[frame["metric"].isin(QUALITY)].copy()


_EVALUATION_CODE = ("evaluate.py", "metrics.py", "methods.py")
"""The modules whose code decides an evaluation's numbers (part of the cache key)."""


def _cached_quality_rows(
    variant: Ablation,
    model: nn.Module,
    run: TrainedRun,
    testset_dir: Path,
    *,
    levels: Sequence[str],
    device: torch.device,
    lpips: LPIPSMetric | LPIPSUnavailable | None,
) -> pd.DataFrame:
    """`_quality_rows`, kept in the run folder (``eval_<test set>.csv`` and its sidecar) and
    reused while the weights, test sets, levels, LPIPS and evaluation code are unchanged: a
    rerun, or the table after a second seed's runs, evaluates only what is new."""
    package = Path(__file__).resolve().parent.parent
    key = {
        "variant": variant.name,
        "weights_sha256": file_sha256(run.weights),
        "testsets_manifest_sha256": testset_summary(testset_dir)["manifest_sha256"],
        "levels": list(levels),
        "lpips": lpips_description(lpips),
        "code_sha256": {name: file_sha256(package / name) for name in _EVALUATION_CODE},
    }
    cache = run.run_dir / f"eval_{testset_dir.name}.csv"
    if cache.is_file():
        try:
            frame, metadata = read_results(cache)
        except (OSError, ValueError) as error:
            logger.warning("%s: not reusable (%s); evaluating again", cache, error)
        else:
            if metadata.get("cache_key") == key:
                logger.info("%s on %s: reusing %s", variant.name, testset_dir.name, cache)
                frame["note"] = frame["note"].fillna("")  # a CSV reads "" back as missing
                return frame
    rows = _quality_rows(
        variant, model, run.weights, testset_dir, levels=levels, device=device, lpips=lpips
    )
    write_results(rows, cache, metadata={"cache_key": key})
    return rows


def _run_summary(run_dir: Path) -> dict[str, Any]:
    record = RunRecord.read(run_dir)
    return {
        "run_dir": str(run_dir),
        "status": record.status,
        "iteration": record.iteration,
        "wall_time_s": record.wall_time_s,
        "it_per_s": record.it_per_s_this_call,
        "init_from": record.init_from,
    }


def _load_variant(weights: Path, device: torch.device, *, name: str) -> nn.Module:
    """A trained variant (the run's exported EMA generator), float32, eval mode: a DASR, or a
    plain network for the N = 1 baseline."""
    model = load_model(weights, device=device)
    if isinstance(model, DASR) == (name == BASELINE):
        wanted = "a plain network" if name == BASELINE else "a DASR variant"
        raise TypeError(f"{weights} holds a {type(model).__name__}, not {wanted} ({name})")
    return model.float().eval()


def _pooled(images: pd.DataFrame) -> pd.DataFrame:
    """Per image, the mean over the levels; every test set's images together (dataset and level
    `POOLED`, image ``<dataset>/<image>``): one paired unit per image."""
    keys = ["method", "metric", "dataset", "image"]
    pooled = images.groupby(keys, as_index=False)["value"].mean()
    pooled["image"] = pooled["dataset"] + "/" + pooled["image"]
    return pooled.assign(dataset=POOLED, level=POOLED)


def paired_rows(quality: pd.DataFrame, *, seed: int) -> pd.DataFrame:
    """Each variant minus (h) of the same seed, image by image: per (test set, level) and pooled
    (`_pooled`), the mean and its 95 % t interval (`dasrlib.evaluate.paired_differences`).
    `quality` holds the per-image rows of one seed; rows follow RESULT_COLUMNS + ci95 bounds."""
    images = quality[quality["aggregate"] == "image"]
    frames = (images, _pooled(images))
    out = []
    for name in dict.fromkeys(images["method"]):
        if name == REFERENCE:
            continue
        for frame in frames:
            gaps = paired_differences(frame, minuend=name, subtrahend=REFERENCE, metrics=QUALITY)
            for gap in gaps.itertuples(index=False):
                out.append(
                    {
                        "method": name,
                        "dataset": gap.dataset,
                        "level": gap.level,
                        "metric": diff_metric(gap.metric),
                        "value": gap.mean,
                        "n_images": gap.n_images,
                        "paper_value": math.nan,
                        "seed": seed,
                        "aggregate": "difference",
                        "ci95_low": gap.ci95_low,
                        "ci95_high": gap.ci95_high,
                        "note": f"paired per-image difference to (h) {REFERENCE}, same seed; "
                        "mean and 95 % t interval",
                    }
                )
    return pd.DataFrame(out)


def _gap(rows: pd.DataFrame, name: str, seed: int, metric: str) -> Gap:
    hit = rows[
        (rows["method"] == name)
        & (rows["seed"] == seed)
        & (rows["metric"] == diff_metric(metric))
        & (rows["dataset"] == POOLED)
    ]
    if hit.empty:
        return NO_GAP
    row = hit.iloc[0]
    return Gap(float(row["value"]), float(row["ci95_low"]), float(row["ci95_high"]))


def _cost(rows: pd.DataFrame, name: str, metric: str) -> float:
    hit = rows[(rows["method"] == name) & (rows["metric"] == metric)]
    return float(hit["value"].iloc[0]) if len(hit) else math.nan


def training_speed(run_dir: Path) -> float:
    """Median iterations per second between the rows of a run's ``metrics.csv``, over every call
    of every budget (the few rows with a validation or a resume in them barely move it); NaN
    without rows."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        return math.nan
    rates = pd.read_csv(path).get("it_per_s")
    return math.nan if rates is None or rates.dropna().empty else float(rates.median())


def second_seed_variants(rows: pd.DataFrame, *, seed: int) -> list[str]:
    """The variants whose pooled PSNR-Y difference to (h) at `seed` has an interval that includes
    0: the ones a second seed has to separate from (h)."""
    names = dict.fromkeys(rows.loc[rows["metric"] == diff_metric(METRIC_PSNR), "method"])
    names.pop(SEED_NOISE, None)
    return [n for n in names if _gap(rows, n, seed, METRIC_PSNR).includes_zero]


def _reference_cell(rows: pd.DataFrame, seed: int, base_seed: int) -> str:
    """The (h) line's PSNR-Y cell: the reference, and at an extra seed the seed noise."""
    if seed == base_seed:
        return "0 (reference)"
    noise = _gap(rows, SEED_NOISE, seed, METRIC_PSNR).cell(3)
    return f"0 (reference; seed {seed} minus seed {base_seed}: {noise})"


def ranked_table(rows: pd.DataFrame, *, base_seed: int) -> pd.DataFrame:
    """One line per (variant, seed), ranked by the pooled PSNR-Y difference to (h) (the (h) line
    at 0), the budget's seed first: the three differences with intervals, training and inference
    cost, and the paper's finding beside whether its prediction holds here (`FINDINGS`)."""
    lines = []
    with_reference = set(rows.loc[rows["method"] == REFERENCE, "seed"].astype(int))
    seeds = sorted(with_reference, key=lambda seed: (seed != base_seed, seed))
    for seed in seeds:
        names = dict.fromkeys(rows.loc[rows["seed"] == seed, "method"])
        for name in (n for n in names if n != SEED_NOISE):
            gaps = {m: _gap(rows, name, seed, m) for m in QUALITY}
            ratio = _cost(rows, name, "gmacs_vs_expert")
            finding = FINDINGS.get(name)
            holds = "reference"
            if finding is not None:
                holds = "yes" if finding.holds(gaps, ratio) else "no"
                measured = {**{m: g.mean for m, g in gaps.items()}, "gmacs_vs_expert": ratio}
                missing = [m for m in finding.uses if math.isnan(measured[m])]
                if missing:
                    holds = f"n/a (no {', '.join(missing)})"
            lines.append(
                {
                    "sort": 0.0 if name == REFERENCE else gaps[METRIC_PSNR].mean,
                    "panel": ablation(name).panel,
                    "method": name,
                    "seed": seed,
                    "PSNR-Y vs (h), dB": _reference_cell(rows, seed, base_seed)
                    if name == REFERENCE
                    else gaps[METRIC_PSNR].cell(3),
                    "SSIM-Y vs (h)": "" if name == REFERENCE else gaps[METRIC_SSIM].cell(4),
                    "LPIPS vs (h)": "" if name == REFERENCE else gaps[METRIC_LPIPS].cell(4),
                    "train it/s": f"{_cost(rows, name, TRAIN_SPEED):.2f}",
                    "GMACs / expert": f"{ratio:.2f}",
                    "latency ms": f"{_cost(rows, name, 'latency_ms'):.1f}",
                    "paper (Sec. 4.5)": finding.paper if finding else "the default model",
                    "predicts here": finding.expected if finding else "",
                    "holds": holds,
                }
            )
    table = pd.DataFrame(lines)
    if table.empty:
        return table
    order = {seed: i for i, seed in enumerate(seeds)}
    table = table.assign(seed_order=table["seed"].map(order))
    table = table.sort_values(["seed_order", "sort"], ascending=[True, False], kind="stable")
    table.insert(0, "rank", table.groupby("seed").cumcount() + 1)
    return table.drop(columns=["seed_order", "sort"]).set_index(["seed", "rank", "panel", "method"])


def scale_description(budget: TrainConfig, pretrain_iterations: int) -> str:
    """The training scale in words, for the first line of the table."""
    model, data = budget.model, budget.data
    return (
        f"{model.num_feat} channels, {model.num_block} blocks, LR patch "
        f"{data.patch_size // data.scale} (HR {data.patch_size}), batch {data.batch_size}, "
        f"{budget.schedule.iterations} iterations per variant after a {pretrain_iterations}-"
        f"iteration pixel-loss pretraining, seed {budget.seed}"
    )


def tabulate(
    runs: Mapping[str, TrainedRun],
    testset_dir: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    budget: TrainConfig,
    pretrain_iterations: int,
    out_dir: str | os.PathLike[str],
    levels: Sequence[str] = LEVELS,
    lpips: LPIPSMetric | LPIPSUnavailable | None,
    device: str | torch.device = "auto",
    latency_size: int | Sequence[int] = (339, 510),
    latency_repeats: int = 20,
    latency_warmup: int = 5,
    precision: str = "fp32",
    pending: Sequence[str] = (),
) -> TableResult:
    """Evaluate and profile every trained variant; write ``out_dir/ablations.{csv,json,md}``.

    `runs` maps `run_key`s to their trained runs (`run_plan` of `plan`, in its order).
    Evaluation runs on `device` on the test set folder `testset_dir`, or each of several (built by
    `dasrlib.testsets.prepare_testsets`), as do the latency runs at a `latency_size` LR input
    (default: the size of most DIV2K validation LR images; `expert_cost_rows`). Rows (long
    format, a ``seed`` column): per run the per-image and mean PSNR-Y, SSIM-Y and LPIPS of each
    test set; per variant of the budget's seed its cost rows and training speed; and each
    variant minus (h) of the same seed, paired per image, per test set and level and pooled
    (`paired_rows`, with ``ci95_low`` / ``ci95_high``). LPIPS rows are NaN with the reason in
    ``note`` when `lpips` is `LPIPSUnavailable`. The markdown's first line states the scale
    (`scale_description`); `pending` names the planned runs not trained yet (in its notes).
    """
    device = resolve_device(device)
    values = {**to_dict(budget), "device": str(device)}
    base_seed = int(values["seed"])
    dirs = [testset_dir] if isinstance(testset_dir, str | os.PathLike) else list(testset_dir)
    testsets = [project_path(d) for d in dirs]
    keys = {key: split_run_key(key) for key in runs}
    chosen = _selected(list(dict.fromkeys(name for name, _ in keys.values())))
    quality: list[pd.DataFrame] = []
    costs: list[pd.DataFrame] = []
    for key, (name, extra_seed) in keys.items():
        variant = ablation(name)
        seed = base_seed if extra_seed is None else extra_seed
        weights = runs[key].weights
        model = _load_variant(weights, device, name=name)
        for testset in testsets:
            rows = _cached_quality_rows(
                variant, model, runs[key], testset, levels=levels, device=device, lpips=lpips
            )
            quality.append(rows.assign(seed=seed, panel=variant.panel))
        if extra_seed is None:
            cost = pd.DataFrame(
                expert_cost_rows(
                    name,
                    model,
                    latency_size=latency_size,
                    device=device,
                    repeats=latency_repeats,
                    warmup=latency_warmup,
                    precision=precision,
                    seed=base_seed,
                )
            )
            speed = training_speed(runs[key].run_dir)
            cost.loc[len(cost)] = {
                "method": name,
                "dataset": EFFICIENCY_DATASET,
                "level": "train",
                "metric": TRAIN_SPEED,
                "value": speed,
                "n_images": 0 if math.isnan(speed) else 1,
                "paper_value": math.nan,
                "note": f"median training iterations per second between metrics.csv rows (the "
                f"budget's device {budget.run.device}, {budget.run.precision} precision)",
            }
            costs.append(cost.assign(seed=seed, panel=variant.panel, aggregate="cost"))
        logger.info("%s %s: evaluated%s", variant.panel, key, "" if extra_seed else " and profiled")
    measured = pd.concat(quality, ignore_index=True)
    gaps = [
        paired_rows(measured[measured["seed"] == seed], seed=seed)
        for seed in sorted(set(measured["seed"]))
        if ((measured["seed"] == seed) & (measured["method"] == REFERENCE)).any()
    ]
    gaps = [g.assign(panel=[ablation(n).panel for n in g["method"]]) for g in gaps if len(g)]
    reference = measured[measured["method"] == REFERENCE]
    floor = []
    for seed in sorted(set(reference["seed"]) - {base_seed}):
        pair = reference[reference["seed"].isin([base_seed, seed])]
        relabelled = pair.assign(method=pair["seed"].map({base_seed: REFERENCE, seed: SEED_NOISE}))
        floor.append(paired_rows(relabelled, seed=seed))
    note = "(h) at this seed minus (h) at the budget's seed, paired per image: the seed noise"
    gaps = [*gaps, *(f.assign(panel="(h)", note=note) for f in floor if len(f))]
    rows = pd.concat([measured, *costs, *gaps], ignore_index=True)
    extra = ["seed", "panel", "aggregate", "image", "ci95_low", "ci95_high", "note"]
    for column in extra:
        if column not in rows:
            rows[column] = math.nan
    rows = rows.loc[:, [*RESULT_COLUMNS, *extra]]
    rows["note"] = rows["note"].fillna("")
    rows["image"] = rows["image"].fillna("")
    rows["seed"] = rows["seed"].astype(int)
    config = {
        "budget": values,
        "pretrain_iterations": pretrain_iterations,
        "variants": {a.name: {"panel": a.panel, "caption": a.caption, **a.options} for a in chosen},
        "runs": {key: _run_summary(run.run_dir) for key, run in runs.items()},
        "pending": list(pending),
        "testsets": [testset_summary(t) for t in testsets],
        "levels": list(levels),
        "lpips": lpips_description(lpips),
        "profile": {
            "gmacs_size": GMACS_SIZE,
            "latency_size": list(height_width(latency_size)),
            "repeats": latency_repeats,
            "warmup": latency_warmup,
            "precision": precision,
        },
    }
    means = rows[rows["aggregate"].isin(["mean", "cost"])]
    datasets = ", ".join(dict.fromkeys(measured["dataset"]))
    notes = [
        f"evaluated on {datasets} at {len(levels)} levels ({', '.join(levels)}); differences "
        f"to (h) are paired per image (same seed), pooled: each image's mean over the levels, "
        "every test set's images together (so a set weighs as many images as it has); "
        "[95 % t interval]",
        "the intervals cover the spread over test images, not over training seeds: at an "
        "extra seed the (h) line gives (h)'s own seed-to-seed difference, the noise floor to "
        "read the others against; with 8 variants x 3 metrics at 95 % each, about one "
        "interval in twenty excludes 0 by chance",
        "cost: parameters, GMACs at a "
        f"{GMACS_SIZE}x{GMACS_SIZE} LR input (also per plain expert), latency and memory on "
        "this device; train it/s: the median over each run's metrics.csv rows; each row's note "
        "in the CSV says how it was measured",
    ]
    if pending:
        notes.append(f"not trained yet (the next budget continues them): {', '.join(pending)}")
    tables = {
        RANKED_TABLE: ranked_table(rows, base_seed=base_seed),
        ABLATIONS_TABLE: wide_table(means, index=["panel", "method", "seed", "dataset"]),
    }
    return write_table(
        rows,
        tables,
        Path(out_dir) / "ablations.csv",
        title=f"Fig. 4 ablations at {scale_description(budget, pretrain_iterations)}",
        notes=notes,
        metadata=run_metadata(config=config, seed=base_seed, device=device),
        contents="long format: per image, means, paired differences to (h) and cost",
    )


# ---------------------------------------------------------------------------------------------
# The Fig. 4 image
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RealImage:
    """The LR image of the Fig. 4 grid: [3, h, w] in [0, 1], its name and where it came from."""

    image: Tensor
    name: str
    source: str


def _centre_crop(image: Tensor, crop: int | None) -> Tensor:
    if crop is None:
        return image
    height, width = image.shape[-2:]
    if crop <= 0:
        raise ValueError(f"crop must be positive or None, got {crop}")
    top, left = max(0, (height - crop) // 2), max(0, (width - crop) // 2)
    return image[..., top : top + crop, left : left + crop]


def load_real_image(
    path: str | os.PathLike[str] | None, *, crop: int | None = None, name: str | None = None
) -> RealImage:
    """The real LR image that every variant super-resolves for the Fig. 4 grid.

    `path` is an image file or a folder (relative paths from the repository root): a folder
    gives the image whose stem is `name`, or its first image in sorted order. When `path` is
    None or does not exist, the first embedded photo is used instead (logged). `crop` takes a
    centre square of that side (None: the whole image).
    """
    folder = None if path is None else project_path(path)
    if folder is not None and folder.is_file():
        chosen = folder
    elif folder is not None and folder.is_dir():
        files = list_image_files(folder)
        if name is not None:
            files = [f for f in files if f.stem == name]
        if not files:
            wanted = f"an image named {name!r}" if name is not None else "no image"
            raise FileNotFoundError(f"real-image folder {folder} holds {wanted}")
        chosen = files[0]
    else:
        photos = EmbeddedPhotos()
        logger.warning(
            "real image %s not found; using the embedded photo %s", folder, photos.names[0]
        )
        chosen = photos.paths[0]
    image = _centre_crop(read_image(chosen).rgb, crop).contiguous()
    return RealImage(image=image, name=chosen.stem, source=str(chosen))


@torch.inference_mode()
def super_resolve_variants(
    runs: Mapping[str, TrainedRun],
    lr: Tensor,
    *,
    device: str | torch.device = "auto",
) -> dict[str, Tensor]:
    """x4 SR of one LR image [3, h, w] by each trained variant (its exported EMA model):
    {variant name: [3, 4h, 4w] in [0, 1]}, CPU float32, in the order of `runs` (extra-seed
    runs, `run_key` ``<name>@seed<s>``, are left out: one panel per variant)."""
    device = resolve_device(device)
    batch = lr[None].to(device=device, dtype=torch.float32)
    outputs: dict[str, Tensor] = {}
    for key, run in runs.items():
        name, extra_seed = split_run_key(key)
        if extra_seed is not None:
            continue
        model = _load_variant(run.weights, device, name=name)
        net = DASRInference(model) if isinstance(model, DASR) else model
        outputs[name] = net(batch)[0].clamp(0.0, 1.0).float().cpu()
    return outputs


def write_fig4(
    runs: Mapping[str, TrainedRun],
    real: RealImage,
    out_png: str | os.PathLike[str],
    *,
    device: str | torch.device = "auto",
) -> Path:
    """The Fig. 4 grid, its one home: `real` super-resolved by every trained variant in `runs`
    (`super_resolve_variants`, the inference) drawn by `dasrlib.viz.fig4_grid` (the drawing)
    into `out_png` (relative: from the repository root)."""
    outputs = super_resolve_variants(runs, real.image, device=device)
    return fig4_grid(
        real.image,
        outputs,
        project_path(out_png),
        titles=FIG4_TITLES,
        suptitle=f"Fig. 4 ablations, x4 SR of {real.name}",
        columns=math.ceil(math.sqrt(len(outputs) + 1)),  # the input and every variant
    )
