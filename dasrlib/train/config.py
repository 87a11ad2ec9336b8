"""The training configuration (Sec. 4.1): typed sections, validated once when built.

Attribute paths (the flat names of files, notebooks and ``--set`` on the left)::

    stage, seed, pretrain_iterations            config.stage, config.seed, ...
    backbone, num_feat, num_block, num_experts,
    weighting, mixing, per_sample_impl,
    predictor_feat, init_from,
    expert_init_noise, disc_num_feat            config.model.<name>
    data_root, batch_size, patch_size, scale,
    level_probs, queue_size, usm_targets,
    data_block_iters, val_images, val_crop,
    val_levels                                  config.data.<name>
    pixel_weight, regression_weight,
    perceptual_weight, adversarial_weight,
    perceptual_layer_weights, vgg_network,
    vgg_weights, allow_random_vgg_for_tests     config.loss.<name>
    lr, disc_lr, betas, lr_milestones, lr_gamma,
    ema_decay, predictor_warmup_iters,
    max_nonfinite_in_a_row                      config.optimiser.<name>
    iterations, start_iteration,
    time_limit_minutes, log_every, val_every,
    checkpoint_every                            config.schedule.<name>
    name, out_dir, resume, device, precision,
    channels_last, compile, prefetch_data,
    export_dtype, tensorboard, progress         config.run.<name>

Build one from flat names with `config_from_parameters` or ``load_config(TrainConfig, flat)``;
change fields with ``config.replace(name="x", lr=3e-4)`` (flat or dotted names). Files keep the
flat layout: ``to_dict(config)`` is the flat mapping that ``run.json`` and checkpoint states have
always held. `config_hash` hashes the fields of `FORMAT_1_FIELDS` in full and a field added since
only when it differs from its default, so adding a field with a default changes no run's hash.

The sections split the science from the bookkeeping: `model`, `data`, `loss`, `optimiser` and the
top-level stage and seed decide what a run computes; `schedule` (how long, how often to log) and
`run` (where, on which machine, in which precision) may change when a run is resumed. The resume
hash is the hash of the config with those two sections at their defaults.
"""

from __future__ import annotations

import dataclasses
import logging
import types
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from dasrlib.config import (
    ConfigError,
    check_path_text,
    config_hash,
    flat_section,
    load_config,
    require_range,
    to_dict,
)
from dasrlib.degradation.levels import Level
from dasrlib.models import backbones

__all__ = [
    "FORMAT_1_FIELDS",
    "RESUME_FREE_FIELDS",
    "DataSection",
    "LossSection",
    "ModelSection",
    "OptimiserSection",
    "RunSection",
    "ScheduleSection",
    "STAGE_ONLY_FIELDS",
    "TrainConfig",
    "config_from_parameters",
    "explicit_names",
    "fields_without_effect",
    "loss_weights",
    "resume_hash",
]

logger = logging.getLogger(__name__)


def _f(default: Any, help: str) -> Any:  # noqa: A002 - the metadata key is "help"
    return field(default=default, metadata={"help": help})


def _positive(section: object, *names: str) -> None:
    for name in names:
        value = getattr(section, name)
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")


@dataclass(frozen=True, kw_only=True)
class ModelSection:
    """The networks: generator (Sec. 3.1), its initialisation, the discriminator."""

    backbone: str = _f(
        "srresnet",
        f"network of pretrain/baseline ({', '.join(b.name for b in backbones.BACKBONES)}); "
        f"expert topology of dasr ({', '.join(b.name for b in backbones.BACKBONES if b.expert)})",
    )
    num_feat: int = _f(64, "features of srresnet/edsr/dasr experts")
    num_block: int = _f(16, "residual blocks of srresnet/edsr/dasr experts")
    num_experts: int = _f(5, "DASR experts N")
    weighting: Literal["linear", "sigmoid"] = _f("linear", "DASR weighting module A")
    mixing: Literal["weights", "outputs", "single_expert_mapping", "dcd"] = _f(
        "weights", "DASR mixing (Fig. 4 variants)"
    )
    per_sample_impl: Literal["grouped", "grouped_cl", "bmm", "expert_sum"] = _f(
        "grouped", "how DASR runs per-sample mixed convolutions in training"
    )
    predictor_feat: int = _f(64, "features of the DASR degradation predictor P (paper: 64)")
    init_from: str | None = _f(
        None,
        "weights to start from: a run folder (its model.safetensors) or a weights file; "
        "dasr copies a plain backbone into every expert",
    )
    expert_init_noise: float = _f(
        0.0, "std (relative to each layer's std) of noise added to each expert copy"
    )
    disc_num_feat: int = _f(64, "features of the U-Net discriminator")

    def __post_init__(self) -> None:
        if self.init_from is not None:
            check_path_text("init_from", self.init_from)
        require_range(self, "expert_init_noise", low=0)
        for name in ("num_feat", "num_block", "num_experts", "predictor_feat", "disc_num_feat"):
            require_range(self, name, low=1)


@dataclass(frozen=True, kw_only=True)
class DataSection:
    """The training-pair stream (Sec. 3.2) and the held-out validation images."""

    data_root: str | None = _f(None, "HR image folder; None: the embedded photos")
    batch_size: int = _f(24, "total batch (split over processes)")
    patch_size: int = _f(256, "HR patch side (LR = patch_size / scale)")
    scale: int = _f(4, "super-resolution factor")
    level_probs: tuple[float, float, float] = _f(
        (0.3, 0.3, 0.4), "probabilities of the weak, standard, severe levels per batch"
    )
    queue_size: int = _f(192, "training-pair queue (shuffles pairs across batches); 0: none")
    usm_targets: bool = _f(True, "pixel and perceptual losses against the USM-sharpened HR")
    data_block_iters: int = _f(
        1000, "the data stream restarts from (seed, rank, block) every this many iterations"
    )
    val_images: int = _f(4, "images held out of the data root for validation; 0: none")
    val_crop: int = _f(256, "centre crop side of each validation HR image")
    val_levels: tuple[str, ...] = _f(
        ("bicubic", "weak", "standard", "severe"), "degradation levels of the validation set"
    )

    def __post_init__(self) -> None:
        if self.data_root is not None:
            check_path_text("data_root", self.data_root)
        _positive(self, "batch_size", "patch_size", "scale", "data_block_iters")
        if self.patch_size % self.scale:
            raise ValueError(f"patch_size {self.patch_size} is not divisible by scale {self.scale}")
        if self.val_images < 0 or self.val_crop < 8 * self.scale:
            raise ValueError("val_images must be >= 0 and val_crop >= 8 * scale")
        require_range(self, "level_probs", low=0)
        require_range(self, "queue_size", low=0)
        if sum(self.level_probs) <= 0:
            raise ConfigError(f"level_probs must not all be 0, got {self.level_probs!r}")
        for level in self.val_levels:
            try:
                Level(level)
            except ValueError as error:
                raise ConfigError(f"val_levels: {error}") from None


@dataclass(frozen=True, kw_only=True)
class LossSection:
    """The objective, Eq. 3: L = pixel + regression + perceptual + adversarial, each weighted."""

    pixel_weight: float = _f(1.0, "weight of the L1 pixel loss")
    regression_weight: float = _f(1.0, "weight of the L1 regression loss on v (dasr only)")
    perceptual_weight: float = _f(1.0, "weight of the VGG perceptual loss (not in pretrain)")
    adversarial_weight: float = _f(0.1, "weight of the GAN loss (not in pretrain)")
    perceptual_layer_weights: tuple[float, float, float, float, float] = _f(
        (0.1, 0.1, 1.0, 1.0, 1.0),
        "weights of VGG19 conv1_2, conv2_2, conv3_4, conv4_4, conv5_4 (VGG16: conv3_3, 4_3, 5_3)",
    )
    vgg_network: str = _f(
        "auto",
        "perceptual trunk: vgg19 (paper), vgg16 (converted, `fetch imagenet-features`) or auto "
        "(vgg19 where its file is, else vgg16); the one used is in run.json's `perceptual`",
    )
    vgg_weights: str | None = _f(
        None, "VGG ImageNet checkpoint; None: torchvision's VGG19 in the torch hub cache"
    )
    allow_random_vgg_for_tests: bool = _f(False, "use a random VGG19 (tests only)")

    def __post_init__(self) -> None:
        for weight in ("pixel", "regression", "perceptual", "adversarial"):
            if getattr(self, f"{weight}_weight") < 0:
                raise ValueError(f"{weight}_weight must be >= 0")
        if self.vgg_network not in ("auto", "vgg19", "vgg16"):
            raise ValueError(f"vgg_network {self.vgg_network!r} is not one of auto, vgg19, vgg16")
        require_range(self, "perceptual_layer_weights", low=0)


@dataclass(frozen=True, kw_only=True)
class OptimiserSection:
    """Adam, its learning-rate steps, the EMA (Sec. 4.1) and the non-finite-loss guard."""

    lr: float = _f(1e-4, "Adam learning rate of the generator")
    disc_lr: float = _f(1e-4, "Adam learning rate of the discriminator")
    betas: tuple[float, float] = _f((0.9, 0.99), "Adam betas")
    lr_milestones: tuple[int, ...] = _f((), "iterations where the learning rates are multiplied")
    lr_gamma: float = _f(0.5, "factor applied at each milestone")
    ema_decay: float = _f(0.999, "EMA decay of the generator weights; 0 disables the EMA")
    predictor_warmup_iters: int = _f(
        0, "dasr: first iterations train the predictor P alone on the regression loss"
    )
    max_nonfinite_in_a_row: int = _f(
        10, "stop with an error after this many skipped steps in a row"
    )

    def __post_init__(self) -> None:
        _positive(self, "max_nonfinite_in_a_row")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        for name in ("lr", "disc_lr", "lr_gamma"):
            require_range(self, name, low=0.0, low_open=True)
        require_range(self, "betas", low=0.0, high=1.0, high_open=True)
        require_range(self, "predictor_warmup_iters", low=0)
        require_range(self, "lr_milestones", low=1)


@dataclass(frozen=True, kw_only=True)
class ScheduleSection:
    """How long a run goes and how often it logs, validates and checkpoints (may change on
    resume)."""

    iterations: int = _f(500_000, "optimiser steps of the stage (dasr stage for 'both')")
    start_iteration: int = _f(
        0,
        "iteration a run without a checkpoint starts at (a warm restart from init_from: fresh "
        "optimiser, the iteration count and learning-rate schedule continue)",
    )
    time_limit_minutes: float | None = _f(
        None, "stop cleanly (checkpoint + export) after this wall time; None: no limit"
    )
    log_every: int = _f(100, "write a metrics.csv row every this many iterations")
    val_every: int = _f(5000, "validate the EMA model every this many iterations (and at the end)")
    checkpoint_every: int = _f(
        5000, "write a checkpoint every this many iterations (and at the end)"
    )

    def __post_init__(self) -> None:
        _positive(self, "iterations", "log_every", "val_every", "checkpoint_every")
        if self.start_iteration < 0:
            raise ValueError(f"start_iteration must be >= 0, got {self.start_iteration}")
        if self.time_limit_minutes is not None and self.time_limit_minutes <= 0:
            raise ValueError(f"time_limit_minutes must be positive, got {self.time_limit_minutes}")


@dataclass(frozen=True, kw_only=True)
class RunSection:
    """Where the files go, the machine and the outputs (may change on resume)."""

    name: str = _f("dasr", "run name: files go to <out_dir>/<name>/")
    out_dir: str = _f("results/runs", "folder of run folders (relative: from the repository root)")
    resume: Literal["auto", "never"] = _f(
        "auto", "auto: continue from the run's checkpoint if any; never: start over (overwrites)"
    )
    device: str = _f("auto", "auto | cpu | cuda | cuda:K (torchrun: cuda:LOCAL_RANK)")
    precision: Literal["auto", "fp32", "tf32", "bf16", "fp16"] = _f(
        "auto",
        "autocast precision; auto: bf16 on CUDA GPUs and on CPUs with bf16 matrix units, else fp32",
    )
    channels_last: bool | None = _f(
        None, "channels-last tensors; None: on for CUDA and for bf16 on a CPU"
    )
    compile: bool = _f(False, "torch.compile the generator's training forward")
    prefetch_data: bool = _f(
        True,
        "synthesise the next batch while the current step runs (CUDA: a side stream; CPU: a "
        "background thread); the batches are the same either way",
    )
    export_dtype: Literal["fp32", "fp16", "bf16"] = _f("fp32", "dtype of model.safetensors")
    tensorboard: bool = _f(False, "also log scalars to <run>/tensorboard")
    progress: bool = _f(True, "tqdm progress bar")

    def __post_init__(self) -> None:
        check_path_text("out_dir", self.out_dir)
        check_path_text("name", self.name)
        if not self.name.strip():
            raise ConfigError("name: a run name may not be empty")

    @property
    def path(self) -> str:
        """The run folder ``<out_dir>/<name>`` as written (relative paths stay relative; make it
        absolute with `dasrlib.results.project_path`). The one place a run folder is named: the
        trainer writes there, stage 'both' and the experiments' plans point ``init_from`` at it.
        """
        return f"{self.out_dir}/{self.name}"


def _section(cls: type, help: str) -> Any:  # noqa: A002 - the metadata key is "help"
    return field(default_factory=cls, metadata=flat_section(help))


def loss_weights(stage: str, loss: LossSection) -> dict[str, float]:
    """The terms of Eq. 3 a (single) stage trains with, and their weights; zero weights dropped.

    pretrain: pixel; dasr: pixel, regression, perceptual, adversarial; baseline: all but the
    regression term.
    """
    weights = {"pixel": loss.pixel_weight}
    if stage == "dasr":
        weights["regression"] = loss.regression_weight
    if stage != "pretrain":
        weights["perceptual"] = loss.perceptual_weight
        weights["adversarial"] = loss.adversarial_weight
    return {k: v for k, v in weights.items() if v > 0}


FORMAT_1_FIELDS: tuple[str, ...] = (
    # top level and model
    "stage", "seed", "pretrain_iterations", "backbone", "num_feat", "num_block", "num_experts",
    "weighting", "mixing", "per_sample_impl", "predictor_feat", "init_from", "expert_init_noise",
    "disc_num_feat",
    # data
    "data_root", "batch_size", "patch_size", "scale", "level_probs", "queue_size", "usm_targets",
    "data_block_iters", "val_images", "val_crop", "val_levels",
    # loss
    "pixel_weight", "regression_weight", "perceptual_weight", "adversarial_weight",
    "perceptual_layer_weights", "vgg_network", "vgg_weights", "allow_random_vgg_for_tests",
    # optimiser
    "lr", "disc_lr", "betas", "lr_milestones", "lr_gamma", "ema_decay", "predictor_warmup_iters",
    "max_nonfinite_in_a_row",
    # schedule
    "iterations", "start_iteration", "time_limit_minutes", "log_every", "val_every",
    "checkpoint_every",
    # run
    "name", "out_dir", "resume", "device", "precision", "channels_last", "compile",
    "prefetch_data", "export_dtype", "tensorboard", "progress",
)  # fmt: skip
"""The flat fields `TrainConfig` had when run hashes were format 1 (every field hashed): frozen.

`config_hash` hashes these in full and any field added since only when it differs from its
default, so every existing run keeps its `config_hash` and `resume_hash`. Never add a name
here; a new field needs no entry anywhere to leave old hashes alone.
"""


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything a training run does; the defaults are the paper's (Sec. 4.1).

    Every check that needs only the config runs here, once, when it is built.
    """

    stage: Literal["pretrain", "dasr", "baseline", "both"] = _f(
        "dasr", "pretrain | dasr | baseline | both (pretrain, then dasr from it)"
    )
    seed: int = _f(0, "seed of initialisation, data stream, hold-out split and validation set")
    pretrain_iterations: int = _f(0, "steps of the pretrain part when stage='both'")
    model: ModelSection = _section(ModelSection, "networks")
    data: DataSection = _section(DataSection, "training data and validation images")
    loss: LossSection = _section(LossSection, "objective (Eq. 3)")
    optimiser: OptimiserSection = _section(OptimiserSection, "optimisation")
    schedule: ScheduleSection = _section(ScheduleSection, "length and log cadence")
    run: RunSection = _section(RunSection, "run folder, machine, outputs")

    HASHED_IN_FULL: ClassVar[tuple[str, ...]] = FORMAT_1_FIELDS  # see `config_hash`

    def __post_init__(self) -> None:
        stages = ("pretrain", "dasr") if self.stage == "both" else (self.stage,)
        require_range(self, "pretrain_iterations", low=0)
        if self.stage == "both" and self.pretrain_iterations <= 0:
            raise ValueError("stage='both' needs pretrain_iterations > 0")
        backbone = self.model.backbone
        if self.stage in ("pretrain", "baseline") and backbone not in backbones.backbone_names():
            raise ValueError(
                f"backbone {backbone!r} is not one of {backbones.backbone_names()} "
                "(dasrlib.models.backbones)"
            )
        if self.stage in ("dasr", "both") and backbone not in backbones.expert_names():
            raise ValueError(
                f"DASR backbone {backbone!r} is not one of {backbones.expert_names()} "
                "(dasrlib.models.backbones)"
            )
        for stage in stages:
            weights = loss_weights(stage, self.loss)
            if not weights or set(weights) == {"adversarial"}:
                raise ValueError(f"stage {stage!r}: no loss term with a positive weight")
            if "adversarial" in weights and self.data.patch_size % 8:
                raise ValueError(
                    f"the discriminator needs patch_size % 8 == 0, got {self.data.patch_size}"
                )

    @property
    def loss_weights(self) -> dict[str, float]:
        """The terms of Eq. 3 this (single) stage trains with; see `loss_weights`."""
        return loss_weights(self.stage, self.loss)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with `changes` (flat names such as ``lr=3e-4``, or whole sections), validated."""
        return load_config(TrainConfig, self, overrides=changes)


RESUME_FREE_FIELDS = frozenset(
    f.name for section in (ScheduleSection, RunSection) for f in dataclasses.fields(section)
)
"""Flat names that may change when a run is resumed: the `schedule` and `run` sections."""


def resume_hash(config: TrainConfig) -> str:
    """Hash of what must match for a resume: the config with `schedule` and `run` at defaults."""
    return config_hash(dataclasses.replace(config, schedule=ScheduleSection(), run=RunSection()))


def resume_differences(saved: Mapping[str, Any], config: TrainConfig) -> list[str]:
    """Flat names outside `RESUME_FREE_FIELDS` whose value in `saved` (a flat record) differs."""
    now = to_dict(config)
    return sorted(k for k in now if k not in RESUME_FREE_FIELDS and saved.get(k) != now[k])


_DASR_STAGES = ("dasr", "both")
STAGE_ONLY_FIELDS: dict[str, tuple[str, ...]] = {
    "pretrain_iterations": ("both",),
    "num_experts": _DASR_STAGES,
    "weighting": _DASR_STAGES,
    "mixing": _DASR_STAGES,
    "per_sample_impl": _DASR_STAGES,
    "predictor_feat": _DASR_STAGES,
    "expert_init_noise": _DASR_STAGES,
    "regression_weight": _DASR_STAGES,
    "predictor_warmup_iters": _DASR_STAGES,
    "perceptual_weight": ("dasr", "baseline", "both"),
    "adversarial_weight": ("dasr", "baseline", "both"),
}
"""Flat names that have an effect only in the stages listed (`loss_weights`, `build_generator`)."""


def fields_without_effect(stage: str, names: Iterable[str]) -> list[str]:
    """The flat `names` that have no effect in `stage` (see `STAGE_ONLY_FIELDS`), sorted."""
    return sorted({name for name in names if stage not in STAGE_ONLY_FIELDS.get(name, (stage,))})


def _given_names(mapping: Mapping[str, Any]) -> set[str]:
    """Flat names of a parameter mapping: flat keys, dotted keys' last part, sections' keys."""
    sections = {f.name for f in dataclasses.fields(TrainConfig)}
    names: set[str] = set()
    for key, value in mapping.items():
        if key in sections and isinstance(value, Mapping):
            names.update(value)
        else:
            names.add(key.rpartition(".")[2])
    return names


def _without_effect_message(config: TrainConfig, names: Sequence[str]) -> str:
    flat = to_dict(config)
    listed = "; ".join(
        f"{name} = {flat.get(name)!r} (used only in stage {' / '.join(STAGE_ONLY_FIELDS[name])})"
        for name in names
    )
    return f"stage {config.stage!r} does not use {listed}"


def config_from_parameters(
    parameters: Mapping[str, Any],
    *,
    overrides: Mapping[str, Any] | None = None,
    explicit: Collection[str] | None = None,
) -> TrainConfig:
    """A `TrainConfig` from notebook parameters: flat names plus an ``overrides`` dict.

    The notebook and ``python -m dasrlib.train --params FILE`` both build their config here, so
    one parameter file gives the same run either way. Every name must be a config key (flat, a
    section, or dotted); an unknown one raises `dasrlib.config.ConfigError` naming it. A run's
    recorded config (``run.json``, a checkpoint state) reads back the same way.

    A field that has no effect in the chosen stage (`STAGE_ONLY_FIELDS`, e.g.
    ``pretrain_iterations`` with ``stage: pretrain``) is a `ConfigError` when its name is in
    `explicit` (the names a user set: a parameter file's keys and ``--set``). Without `explicit`
    (a notebook, whose namespace mixes its own defaults with what a file injected) such fields
    that differ from `TrainConfig`'s defaults are logged as a warning instead.
    """
    values = dict(parameters)
    extra = values.pop("overrides", None) or {}
    config = load_config(TrainConfig, values, overrides={**extra, **(overrides or {})})
    if explicit is not None:
        unused = fields_without_effect(config.stage, explicit)
        if unused:
            raise ConfigError(_without_effect_message(config, unused))
        return config
    given = explicit_names(parameters, overrides)
    defaults = to_dict(TrainConfig())
    flat = to_dict(config)
    unused = [n for n in fields_without_effect(config.stage, given) if flat[n] != defaults[n]]
    if unused:
        logger.warning("%s: ignored", _without_effect_message(config, unused))
    return config


def explicit_names(
    parameters: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> set[str]:
    """The flat names a parameter file (with its ``overrides``) and ``--set`` items set."""
    values = dict(parameters)
    extra = values.pop("overrides", None) or {}
    return _given_names(values) | _given_names(extra) | _given_names(overrides or {})


def notebook_parameters(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters a notebook holds: its namespace less modules, functions, classes and
    IPython's own names (``In``, ``Out``, ``_``-prefixed).

    Called after the ``parameters`` cell (and papermill's injected one), before anything else
    is assigned, it returns exactly the notebook's parameters, including any a parameter file
    injected under an unknown name, so `config_from_parameters` rejects that name instead of
    ignoring it.
    """
    return {
        name: value
        for name, value in namespace.items()
        if not name.startswith("_")
        and name not in ("In", "Out", "exit", "quit", "get_ipython")
        and not callable(value)
        and not isinstance(value, types.ModuleType)
    }
