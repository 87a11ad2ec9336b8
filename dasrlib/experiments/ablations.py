"""Fig. 4 ablations (Sec. 4.5) as numbers as well as pictures.

The paper shows its ablations only as one real image under each variant. Here every variant is
trained with one shared budget, evaluated on the four seeded test sets (PSNR-Y, LPIPS) and
profiled (parameters, GMACs, latency), and the same real image is super-resolved by each for the
Fig. 4 grid (`write_fig4`: the inference here, the drawing `dasrlib.viz.fig4_grid`).

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

`tabulate` writes ``ablations.csv`` in long format (STYLE point 8) with a ``panel`` column:
per variant, metric ``psnr_y_db`` and ``lpips_alex`` of each test set (the mean over its
``n_images`` images; dataset = the test sets' source, level = the test set), then the cost rows
of `dasrlib.experiments.cost.EXPERT_COST_METRICS` (dataset ``efficiency``, level = the LR input
size ``<H>x<W>``); plus its JSON sidecar (budget, variants, each run's folder, initialisation and
wall time, test sets, device) and ``ablations.md`` (`dasrlib.tables.wide_table`).
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from dasrlib.config import to_dict
from dasrlib.data import EmbeddedPhotos, list_image_files
from dasrlib.device import resolve_device
from dasrlib.evaluate import evaluate, lpips_description
from dasrlib.experiments.cost import GMACS_SIZE, expert_cost_rows, height_width
from dasrlib.experiments.runs import (
    NetworkRun,
    Plan,
    Pretraining,
    RunNaming,
    RunRecord,
    TrainedRun,
    network_config,
    plan_runs,
)
from dasrlib.experiments.runs import pretrain_config as pretrain_run_config
from dasrlib.io import read_image
from dasrlib.methods import Method, network_upscaler
from dasrlib.metrics import LPIPSMetric, LPIPSUnavailable
from dasrlib.models import backbones
from dasrlib.models.checkpoints import load_model
from dasrlib.models.dasr import DASR, DASR_VARIANTS, DASRInference
from dasrlib.paper import LEVELS, METRIC_LPIPS, METRIC_PSNR, PAPER_TABLE2
from dasrlib.results import RESULT_COLUMNS, project_path, run_metadata
from dasrlib.tables import TableResult, wide_table, write_table
from dasrlib.testsets import testset_summary
from dasrlib.train.config import TrainConfig, config_from_parameters
from dasrlib.viz import fig4_grid

__all__ = [
    "ABLATIONS",
    "ABLATIONS_TABLE",
    "ABLATIONS_TITLE",
    "ABLATION_NAMES",
    "FIG4_TITLES",
    "Ablation",
    "RealImage",
    "ablation",
    "budget_config",
    "load_real_image",
    "plan",
    "pretrain_config",
    "super_resolve_variants",
    "tabulate",
    "variant_config",
    "write_fig4",
]

logger = logging.getLogger(__name__)

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
        return {**_DASR_DEFAULTS, **DASR_VARIANTS[self.name]}

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

FIG4_TITLES: dict[str, str] = {a.name: a.title for a in ABLATIONS}
"""Panel titles of the Fig. 4 grid by variant name (`dasrlib.viz.fig4_grid`)."""


def ablation(name: str) -> Ablation:
    """The `Ablation` called `name`; ValueError listing the known names otherwise."""
    for item in ABLATIONS:
        if item.name == name:
            return item
    raise ValueError(f"unknown ablation {name!r}; expected one of {list(ABLATION_NAMES)}")


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
        fields={"stage": "dasr", **variant.options},
        pretraining=_pretraining(variant.options["backbone"]),
    )


def pretrain_config(
    budget: TrainConfig, backbone: str, *, iterations: int, run_prefix: str
) -> TrainConfig:
    """The pixel-loss pretraining of one expert topology (Sec. 4.1) that its variants start from.

    `backbone` is a DASR expert topology ("srresnet" or "edsr_m"); the run is
    ``<run_prefix>_pretrain_<backbone>``.
    """
    return pretrain_run_config(
        budget,
        _pretraining(backbone),
        iterations=iterations,
        naming=RunNaming(prefix=run_prefix),
    )


def variant_config(
    budget: TrainConfig, variant: Ablation, *, init_from: str | None, run_prefix: str
) -> TrainConfig:
    """The DASR training run of one variant: the shared budget plus the variant's options."""
    return network_config(
        budget, _network(variant), init_from=init_from, naming=RunNaming(prefix=run_prefix)
    )


def _selected(variants: Sequence[str]) -> list[Ablation]:
    chosen = [ablation(name) for name in variants]
    if not chosen:
        raise ValueError("no variants to run")
    duplicates = sorted({a.name for a in chosen if chosen.count(a) > 1})
    if duplicates:
        raise ValueError(f"variants listed twice: {duplicates}")
    return chosen


def plan(
    budget: TrainConfig | Mapping[str, Any],
    *,
    variants: Sequence[str] = ABLATION_NAMES,
    pretrain_iterations: int,
    run_prefix: str = "ablation",
) -> Plan:
    """What the ablations train: every variant with the shared `budget` (`budget_config`).

    With `pretrain_iterations` > 0, each expert topology the variants use is first pretrained
    once with the pixel loss and every variant on it starts from that network (the paper's
    initialisation). With 0, variants start from random experts (logged: known to diverge at
    the paper's scale). Runs are named ``<run_prefix>_<variant>`` and
    ``<run_prefix>_pretrain_<backbone>``; `dasrlib.experiments.runs.run_plan` trains or reuses them.
    """
    chosen = _selected(variants)
    return plan_runs(
        budget,
        {variant.name: _network(variant) for variant in chosen},
        pretrain_iterations=pretrain_iterations,
        naming=RunNaming(prefix=run_prefix),
    )


# ---------------------------------------------------------------------------------------------
# Tabulation: quality and cost rows
# ---------------------------------------------------------------------------------------------

ABLATIONS_TITLE = "Fig. 4 ablations (Sec. 4.5): every variant with one budget, quality and cost"
ABLATIONS_TABLE = "Mean PSNR-Y (dB) and LPIPS per test set; cost per variant"
"""The heading of `tabulate`'s one table (`dasrlib.tables.wide_table` of its rows)."""


def _quality_rows(
    variant: Ablation,
    model: DASR,
    weights: Path,
    testset_dir: Path,
    *,
    levels: Sequence[str],
    device: torch.device,
    lpips: LPIPSMetric | LPIPSUnavailable | None,
) -> pd.DataFrame:
    """Mean PSNR-Y and LPIPS per test set of one trained variant (`dasrlib.evaluate.evaluate`)."""
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
    means = frame[
        (frame["aggregate"] == "mean") & frame["metric"].isin([METRIC_PSNR, METRIC_LPIPS])
    ]
    means = means.drop(columns=["image", "aggregate"]).copy()
    means["panel"] = variant.panel
    return means


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


def _load_variant(weights: Path, device: torch.device) -> DASR:
    """A trained variant (the run's exported EMA generator), float32, eval mode."""
    model = load_model(weights, device=device)
    if not isinstance(model, DASR):
        raise TypeError(f"{weights} holds a {type(model).__name__}, not a DASR variant")
    return model.float().eval()


def tabulate(
    runs: Mapping[str, TrainedRun],
    testset_dir: str | os.PathLike[str],
    *,
    budget: TrainConfig,
    pretrain_iterations: int,
    csv_path: str | os.PathLike[str],
    levels: Sequence[str] = LEVELS,
    lpips: LPIPSMetric | LPIPSUnavailable | None,
    device: str | torch.device = "auto",
    latency_size: int | Sequence[int] = (339, 510),
    latency_repeats: int = 20,
    latency_warmup: int = 5,
    precision: str = "fp32",
) -> TableResult:
    """Evaluate and profile every trained variant; write `csv_path` + sidecar + ``.md``.

    `runs` maps variant names to their trained runs (`run_plan` of `plan`, in its order).
    Evaluation runs on `device` on the test sets in `testset_dir` (built by
    `dasrlib.testsets.prepare_testsets`), as do the latency runs at a `latency_size` LR input
    (default: the size of most DIV2K validation LR images; `expert_cost_rows`). Rows follow
    `runs`; per variant the mean PSNR-Y and LPIPS of each test set, then the cost rows. LPIPS
    rows are NaN with the reason in ``note`` when `lpips` is `LPIPSUnavailable`. `budget` and
    `pretrain_iterations` (what `plan` was given) go into the sidecar; the budget's seed seeds
    the latency inputs.
    """
    device = resolve_device(device)
    values = {**to_dict(budget), "device": str(device)}
    seed = int(values["seed"])
    testset_dir = project_path(testset_dir)
    chosen = _selected(list(runs))
    frames: list[pd.DataFrame] = []
    for variant in chosen:
        weights = runs[variant.name].weights
        model = _load_variant(weights, device)
        quality = _quality_rows(
            variant, model, weights, testset_dir, levels=levels, device=device, lpips=lpips
        )
        costs = pd.DataFrame(
            expert_cost_rows(
                variant.name,
                model,
                latency_size=latency_size,
                device=device,
                repeats=latency_repeats,
                warmup=latency_warmup,
                precision=precision,
                seed=seed,
            )
        )
        costs["panel"] = variant.panel
        frames += [quality, costs]
        logger.info("%s %s: evaluated and profiled", variant.panel, variant.name)
    rows = pd.concat(frames, ignore_index=True)
    rows = rows.loc[:, [*RESULT_COLUMNS, "panel", "note"]]
    rows["note"] = rows["note"].fillna("")
    config = {
        "budget": values,
        "pretrain_iterations": pretrain_iterations,
        "variants": {a.name: {"panel": a.panel, "caption": a.caption, **a.options} for a in chosen},
        "runs": {name: _run_summary(run.run_dir) for name, run in runs.items()},
        "testsets": testset_summary(testset_dir),
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
    return write_table(
        rows,
        {ABLATIONS_TABLE: wide_table(rows, index=["panel", "method"])},
        csv_path,
        title=ABLATIONS_TITLE,
        notes=[
            "quality: the mean over each test set's images; cost: parameters, GMACs at a "
            f"{GMACS_SIZE}x{GMACS_SIZE} LR input (also per plain expert), latency and memory on "
            "this device; each row's note in the CSV says how it was measured"
        ],
        metadata=run_metadata(config=config, seed=seed, device=device),
        contents="long format, means per test set and cost",
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
    {variant name: [3, 4h, 4w] in [0, 1]}, CPU float32, in the order of `runs`."""
    device = resolve_device(device)
    batch = lr[None].to(device=device, dtype=torch.float32)
    outputs: dict[str, Tensor] = {}
    for name, run in runs.items():
        model = _load_variant(run.weights, device)
        outputs[name] = DASRInference(model)(batch)[0].clamp(0.0, 1.0).float().cpu()
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
    )
