"""Training (Sec. 4.1, Eq. 3): SRResNet pretraining, DASR, and equal-budget baselines.

Stages (`TrainConfig.stage`):

- ``pretrain``: one `backbone` network (SRResNet by default) trained with the pixel loss on the
  DASR degradation space; the experts' initialisation (Sec. 4.1).
- ``dasr``: DASR with N experts, all copied from ``init_from`` (a pretrained backbone), trained
  with L = pixel + 1.0 regression + 1.0 perceptual + 0.1 adversarial (Eq. 3; every weight is a
  field). A zero weight builds nothing for its term (no VGG, no discriminator).
- ``baseline``: one `backbone` network (srresnet, edsr, rrdb, swinir) trained with the same
  objective minus the regression term, optionally continued from ``init_from``: the
  equal-budget comparison of Table 2.
- ``both``: ``pretrain`` for `pretrain_iterations` into ``<name>_pretrain``, then ``dasr``
  initialised from it into ``<name>``; one wall-clock budget for the two.

Exact resume. The only randomness after initialisation is the data stream, and it is made a
deterministic function of (seed, rank, iteration): iterations are grouped into blocks of
`data_block_iters`; each block starts a fresh patch sampler generator and a fresh
`TrainingPairSource` (its 192-sample queue refilled) seeded from (seed, rank, block). Resuming
at iteration k rebuilds block k // data_block_iters and draws k % data_block_iters batches to
reach the same position, so no queue or generator state has to be stored, and k steps + resume +
k steps equal 2k steps bit for bit on the CPU. The checkpoint holds everything else: generator,
EMA, discriminator, both Adam states, loss scalers, counters.

Checkpoints (``<run>/checkpoints/``): ``latest.safetensors`` (every tensor: ``generator.*``,
``ema.*``, ``discriminator.*``, ``optimizer_g.<param>.<name>``, ...) and ``latest.state.json``
(iteration, config and its hash, optimiser hyper-parameters, counters, and the weights file's
checkpoint id and sha256). A new pair is written under temporary names, then the current pair is
renamed to ``previous.*`` and the new one to ``latest.*``; the loader takes the newest state whose
weights file carries its id and sha256, so a kill at any moment leaves a loadable pair.
``<run>/model.safetensors`` is the EMA generator for `dasrlib.models.load_model`.

Multi-process data parallelism (``torchrun --nproc_per_node=K -m dasrlib.train ...``): one process
per device, `batch_size` is the total batch split evenly over the processes, each with its own
data seed; the generator and the discriminator are wrapped in ``DistributedDataParallel``, which
averages their gradients (with ``find_unused_parameters`` during a predictor warm-up, whose loss
reaches P alone). Rank 0 writes every file.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from dasrlib import losses
from dasrlib.config import (
    ConfigError,
    check_train_ranges,
    config_hash,
    load_config,
    read_config_file,
    to_dict,
)
from dasrlib.data import (
    TRAINING_INPUT_ERRORS,
    ImageList,
    PatchSampler,
    UnusableDataError,
    open_hr_images,
    split_holdout,
)
from dasrlib.degradation import TrainingBatch, TrainingPairSource, degrade
from dasrlib.device import DeviceUnavailableError, autocast_dtype, resolve_device
from dasrlib.io import atomic_write, atomic_write_text, remove_stale_temporaries
from dasrlib.metrics import psnr_y
from dasrlib.models.baselines import build_model
from dasrlib.models.checkpoints import (
    CheckpointError,
    load_model,
    read_state_dict,
    save_weights,
)
from dasrlib.models.dasr import DASR, DASROutput
from dasrlib.results import project_path, run_metadata

__all__ = [
    "RESUME_FREE_FIELDS",
    "STAGES",
    "CheckpointNotFound",
    "NonFiniteLossError",
    "TrainConfig",
    "load_checkpoint",
    "main",
    "train",
    "validation_example",
    "validation_summary",
    "write_checkpoint",
]

logger = logging.getLogger(__name__)

STAGES = ("pretrain", "dasr", "baseline", "both")
_SINGLE_NETWORKS = ("srresnet", "edsr", "rrdb", "swinir")
_DASR_BACKBONE = {"srresnet": "srresnet", "edsr": "edsr_m", "edsr_m": "edsr_m"}
_EXPORT_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _f(default: Any, help: str) -> Any:  # noqa: A002 - the metadata key is "help"
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything a training run does; the defaults are the paper's (Sec. 4.1, DESIGN 1)."""

    # -- run ---------------------------------------------------------------------------------
    name: str = _f("dasr", "run name: files go to <out_dir>/<name>/")
    out_dir: str = _f("results/runs", "folder of run folders (relative: from the repository root)")
    stage: Literal["pretrain", "dasr", "baseline", "both"] = _f(
        "dasr", "pretrain | dasr | baseline | both (pretrain, then dasr from it)"
    )
    resume: Literal["auto", "never"] = _f(
        "auto", "auto: continue from the run's checkpoint if any; never: start over (overwrites)"
    )
    seed: int = _f(0, "seed of initialisation, data stream, hold-out split and validation set")
    iterations: int = _f(500_000, "optimiser steps of the stage (dasr stage for 'both')")
    pretrain_iterations: int = _f(0, "steps of the pretrain part when stage='both'")
    time_limit_minutes: float | None = _f(
        None, "stop cleanly (checkpoint + export) after this wall time; None: no limit"
    )
    # -- data --------------------------------------------------------------------------------
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
    # -- model -------------------------------------------------------------------------------
    backbone: str = _f(
        "srresnet",
        "network of pretrain/baseline (srresnet, edsr, rrdb, swinir); expert topology of dasr "
        "(srresnet or edsr)",
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
    predictor_warmup_iters: int = _f(
        0, "dasr: first iterations train the predictor P alone on the regression loss"
    )
    start_iteration: int = _f(
        0,
        "iteration a run without a checkpoint starts at (a warm restart from init_from: fresh "
        "optimiser, the iteration count and learning-rate schedule continue)",
    )
    # -- objective (Eq. 3) -------------------------------------------------------------------
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
    disc_num_feat: int = _f(64, "features of the U-Net discriminator")
    # -- optimisation ------------------------------------------------------------------------
    lr: float = _f(1e-4, "Adam learning rate of the generator")
    disc_lr: float = _f(1e-4, "Adam learning rate of the discriminator")
    betas: tuple[float, float] = _f((0.9, 0.99), "Adam betas")
    lr_milestones: tuple[int, ...] = _f((), "iterations where the learning rates are multiplied")
    lr_gamma: float = _f(0.5, "factor applied at each milestone")
    ema_decay: float = _f(0.999, "EMA decay of the generator weights; 0 disables the EMA")
    max_nonfinite_in_a_row: int = _f(
        10, "stop with an error after this many skipped steps in a row"
    )
    # -- machine -----------------------------------------------------------------------------
    device: str = _f("auto", "auto | cpu | cuda | cuda:K (torchrun: cuda:LOCAL_RANK)")
    precision: Literal["auto", "fp32", "tf32", "bf16", "fp16"] = _f(
        "auto", "autocast precision; auto: bf16 on CUDA GPUs that support it, else fp32"
    )
    channels_last: bool | None = _f(None, "channels-last tensors; None: on for CUDA")
    compile: bool = _f(False, "torch.compile the generator's training forward")
    prefetch_data: bool = _f(
        True, "CUDA: synthesise the next batch on a side stream while the current step runs"
    )
    # -- outputs -----------------------------------------------------------------------------
    log_every: int = _f(100, "write a metrics.csv row every this many iterations")
    val_every: int = _f(5000, "validate the EMA model every this many iterations (and at the end)")
    checkpoint_every: int = _f(
        5000, "write a checkpoint every this many iterations (and at the end)"
    )
    val_images: int = _f(4, "images held out of the data root for validation; 0: none")
    val_crop: int = _f(256, "centre crop side of each validation HR image")
    val_levels: tuple[str, ...] = _f(
        ("bicubic", "weak", "standard", "severe"), "degradation levels of the validation set"
    )
    export_dtype: Literal["fp32", "fp16", "bf16"] = _f("fp32", "dtype of model.safetensors")
    tensorboard: bool = _f(False, "also log scalars to <run>/tensorboard")
    progress: bool = _f(True, "tqdm progress bar")

    def __post_init__(self) -> None:
        positive = ("iterations", "batch_size", "patch_size", "scale", "log_every", "val_every")
        for name in (*positive, "checkpoint_every", "data_block_iters", "max_nonfinite_in_a_row"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.patch_size % self.scale:
            raise ValueError(f"patch_size {self.patch_size} is not divisible by scale {self.scale}")
        if self.vgg_network not in ("auto", "vgg19", "vgg16"):
            raise ValueError(f"vgg_network {self.vgg_network!r} is not one of auto, vgg19, vgg16")
        if self.stage == "both" and self.pretrain_iterations <= 0:
            raise ValueError("stage='both' needs pretrain_iterations > 0")
        if self.stage in ("pretrain", "baseline") and self.backbone not in _SINGLE_NETWORKS:
            raise ValueError(f"backbone {self.backbone!r} is not one of {_SINGLE_NETWORKS}")
        if self.stage in ("dasr", "both") and self.backbone not in _DASR_BACKBONE:
            raise ValueError(f"DASR backbone {self.backbone!r} is not one of srresnet, edsr")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        for weight in ("pixel", "regression", "perceptual", "adversarial"):
            if getattr(self, f"{weight}_weight") < 0:
                raise ValueError(f"{weight}_weight must be >= 0")
        if self.val_images < 0 or self.val_crop < 8 * self.scale:
            raise ValueError("val_images must be >= 0 and val_crop >= 8 * scale")
        if self.start_iteration < 0:
            raise ValueError(f"start_iteration must be >= 0, got {self.start_iteration}")
        if self.time_limit_minutes is not None and self.time_limit_minutes <= 0:
            raise ValueError(f"time_limit_minutes must be positive, got {self.time_limit_minutes}")
        check_train_ranges(self)


RESUME_FREE_FIELDS = frozenset(
    {
        "name",
        "out_dir",
        "resume",
        "iterations",
        "start_iteration",
        "time_limit_minutes",
        "device",
        "precision",
        "channels_last",
        "compile",
        "prefetch_data",
        "log_every",
        "val_every",
        "checkpoint_every",
        "export_dtype",
        "tensorboard",
        "progress",
    }
)
"""Fields that may change when a run is resumed (schedule, budget, machine, outputs)."""


def resume_hash(config: TrainConfig) -> str:
    """Hash of the fields that must match for a resume (all but `RESUME_FREE_FIELDS`)."""
    defaults = TrainConfig()
    return config_hash(
        dataclasses.replace(config, **{k: getattr(defaults, k) for k in RESUME_FREE_FIELDS})
    )


class NonFiniteLossError(RuntimeError):
    """Too many consecutive non-finite losses; the last good checkpoint is left untouched."""


class CheckpointNotFound(FileNotFoundError):
    """No consistent checkpoint pair in a checkpoint folder."""


# ---------------------------------------------------------------------------------------------
# Seeds and the deterministic data stream
# ---------------------------------------------------------------------------------------------


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed from `seed` and labels (stable across processes, machines and versions)."""
    text = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def _generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


class DataStream:
    """Training batches as a deterministic function of (seed, rank, iteration); see the module doc.

    `batch(i)` returns the batch of iteration i; consecutive calls cost one synthesis each, a jump
    rebuilds the block of i and draws up to `block_iters - 1` batches to reach it. On CUDA with
    `prefetch`, `prefetch(i)` synthesises batch i on a side stream (its host-side draws then wait
    for that stream only, not for the training step queued on the main stream), and `batch(i)`
    hands it to the current stream (`wait_stream` + `record_stream`); the batches are the same.
    """

    def __init__(
        self,
        images: ImageList | Sequence[Tensor],
        *,
        patch_size: int,
        batch_size: int,
        level_probs: Sequence[float],
        queue_size: int,
        block_iters: int,
        seed: int,
        rank: int,
        device: torch.device,
        scale: int,
        usm: bool,
        prefetch: bool = False,
    ) -> None:
        self.seed, self.rank, self.block_iters = seed, rank, block_iters
        self.batch_size, self.level_probs, self.device = batch_size, tuple(level_probs), device
        self.scale, self.usm = scale, usm
        self.queue_size = queue_size if queue_size % batch_size == 0 else 0
        if queue_size and not self.queue_size:
            raise ValueError(f"queue_size {queue_size} is not a multiple of the batch {batch_size}")
        # Patch positions are drawn on the CPU (no device sync); degradations on `device`.
        self._patch_generator = torch.Generator()
        self._pair_generator = torch.Generator(device=device)
        self.sampler = PatchSampler(
            images,
            patch_size=patch_size,
            generator=self._patch_generator,
            device=device,
            scale=scale,
        )
        self._source: TrainingPairSource | None = None
        self._next = -1
        self._stream: torch.cuda.Stream | None = None
        self._ready: tuple[int, TrainingBatch] | None = None
        if prefetch and device.type == "cuda":
            self._stream = torch.cuda.Stream(device=device)
            # The images were uploaded on the current stream: the side stream starts after that.
            self._stream.wait_stream(torch.cuda.current_stream(device))

    def _start_block(self, block: int) -> None:
        self._patch_generator.manual_seed(derive_seed(self.seed, "patches", self.rank, block))
        self._pair_generator.manual_seed(derive_seed(self.seed, "pairs", self.rank, block))
        self._source = TrainingPairSource(
            self.sampler,
            batch_size=self.batch_size,
            level_probs=self.level_probs,
            queue_size=self.queue_size,
            generator=self._pair_generator,
            device=self.device,
            scale=self.scale,
            usm=self.usm,
            degrade_sharpened=self.usm,
        )

    def _synthesise(self, iteration: int) -> TrainingBatch:
        block, offset = divmod(iteration, self.block_iters)
        if iteration != self._next or offset == 0:
            self._start_block(block)
            if offset:
                logger.info(
                    "data stream: drawing %d batches to reach iteration %d", offset, iteration
                )
            assert self._source is not None
            for _ in range(offset):
                self._source.next_batch()
        assert self._source is not None
        self._next = iteration + 1
        return self._source.next_batch()

    def prefetch(self, iteration: int) -> None:
        """Start synthesising the batch of `iteration` (CUDA side stream; no-op elsewhere)."""
        if self._stream is None or (self._ready is not None and self._ready[0] == iteration):
            return
        with torch.cuda.stream(self._stream):
            self._ready = (iteration, self._synthesise(iteration))

    def batch(self, iteration: int) -> TrainingBatch:
        """The training batch of `iteration` (0-based), ready for the current stream."""
        if self._stream is None:
            return self._synthesise(iteration)
        self.prefetch(iteration)
        assert self._ready is not None
        batch = self._ready[1]
        self._ready = None
        current = torch.cuda.current_stream(self.device)
        current.wait_stream(self._stream)
        for tensor in (batch.lr, batch.hr, batch.hr_usm, batch.v, batch.level):
            tensor.record_stream(current)  # freed memory is not reused before this stream is done
        return batch


# ---------------------------------------------------------------------------------------------
# Validation on held-out images
# ---------------------------------------------------------------------------------------------


def _holdout(config: TrainConfig, images: ImageList) -> tuple[ImageList, ImageList | None]:
    """(training images, validation images) split by `seed`; the same on every call."""
    if config.val_images == 0:
        return images, None
    if config.val_images >= len(images):
        raise UnusableDataError(
            f"val_images={config.val_images} leaves no training image out of {len(images)} in "
            f"{config.data_root or 'the embedded photos'}"
        )
    return split_holdout(images, config.val_images, generator=_generator(config.seed + 7919))


def _sr_of(output: Tensor | DASROutput) -> Tensor:
    return output.sr if isinstance(output, DASROutput) else output


@dataclass
class _ValItem:
    name: str
    level: str
    lr: Tensor
    hr: Tensor
    bicubic_psnr: float


class ValidationSet:
    """Held-out HR centre crops degraded once per level with seeded generators (fixed LR).

    Each LR comes from `degrade(hr, level)` with a CPU generator seeded from (seed, image name,
    level), so the set is identical across runs, resumes and devices. `evaluate` reports mean
    PSNR-Y (4-pixel crop, 8-bit) of a model and of bicubic up-sampling per level.
    """

    def __init__(
        self,
        images: ImageList,
        *,
        levels: Sequence[str],
        crop: int,
        seed: int,
        scale: int,
        device: torch.device,
    ) -> None:
        self.items: list[_ValItem] = []
        for name, image in zip(images.names, images, strict=True):
            hr = _centre_crop(image, crop, scale).float().div(255.0).unsqueeze(0)
            for level in levels:
                lr, _ = degrade(
                    hr,
                    level,
                    generator=_generator(derive_seed(seed, "val", name, level)),
                    scale=scale,
                )
                bicubic = _bicubic_up(lr, scale)
                self.items.append(
                    _ValItem(name, level, lr.to(device), hr.to(device), psnr_y(bicubic, hr))
                )
        self.levels = tuple(levels)
        self.scale = scale

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> list[dict[str, Any]]:
        """Rows (level, psnr_y_db, bicubic_psnr_y_db, n_images) of the mean over images."""
        was_training = model.training
        model.eval()
        scores: dict[str, list[tuple[float, float]]] = {level: [] for level in self.levels}
        for item in self.items:
            sr = _sr_of(model(item.lr)).float().clamp(0, 1)
            scores[item.level].append((psnr_y(sr, item.hr), item.bicubic_psnr))
        model.train(was_training)
        rows = []
        for level, pairs in scores.items():
            rows.append(
                {
                    "level": level,
                    "psnr_y_db": sum(p for p, _ in pairs) / len(pairs),
                    "bicubic_psnr_y_db": sum(b for _, b in pairs) / len(pairs),
                    "n_images": len(pairs),
                }
            )
        return rows


def _centre_crop(image: Tensor, crop: int, scale: int) -> Tensor:
    """Centre crop of side min(crop, H, W), rounded down to a multiple of `scale`; [3, h, w]."""
    _, height, width = image.shape
    h = min(crop, height) // scale * scale
    w = min(crop, width) // scale * scale
    top, left = (height - h) // 2, (width - w) // 2
    return image[:, top : top + h, left : left + w]


def _bicubic_up(lr: Tensor, scale: int) -> Tensor:
    return F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------

_STATE_FORMAT = "dasrlib-train-state/1"


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def write_checkpoint(folder: Path, tensors: dict[str, Tensor], state: dict[str, Any]) -> Path:
    """Write ``latest.safetensors`` + ``latest.state.json`` in `folder`, keeping the previous pair.

    The new pair is written as ``next.*`` and flushed; then ``latest.*`` becomes ``previous.*``
    and ``next.*`` becomes ``latest.*``. The state records the weights file's id and sha256, so
    `load_checkpoint` finds a consistent pair whatever moment a kill interrupts this.
    """
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint_id = uuid.uuid4().hex
    next_w, next_s = folder / "next.safetensors", folder / "next.state.json"
    header = {"checkpoint_id": checkpoint_id, "iteration": str(state["iteration"])}
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    save_file(cpu, str(next_w), metadata=header)
    _fsync(next_w)
    state = {**state, "checkpoint_id": checkpoint_id, "weights_sha256": _sha256(next_w)}
    next_s.write_text(json.dumps(state, indent=1, allow_nan=True), encoding="utf-8")
    _fsync(next_s)
    latest_w, latest_s = folder / "latest.safetensors", folder / "latest.state.json"
    if latest_s.exists():
        os.replace(latest_s, folder / "previous.state.json")
    if latest_w.exists():
        os.replace(latest_w, folder / "previous.safetensors")
    os.replace(next_w, latest_w)
    os.replace(next_s, latest_s)
    with contextlib.suppress(OSError):  # make the renames durable where the OS allows it
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return latest_w


def load_checkpoint(folder: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The newest consistent (tensors, state) pair in `folder`; raises `CheckpointNotFound`."""
    states = []
    for stem in ("latest", "previous"):
        path = folder / f"{stem}.state.json"
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, json.JSONDecodeError) as err:  # truncated by a kill: not a candidate
            logger.warning("checkpoint state %s is unreadable (%s); skipping it", path, err)
            continue
        if state.get("format") == _STATE_FORMAT:
            states.append(state)
    weights = {}
    for stem in ("latest", "previous"):
        path = folder / f"{stem}.safetensors"
        try:
            with safe_open(str(path), framework="pt") as handle:
                weights[(handle.metadata() or {}).get("checkpoint_id")] = path
        except Exception as err:  # missing or truncated file: not a candidate
            if path.exists():
                logger.warning("checkpoint weights %s unreadable (%s); skipping them", path, err)
            continue
    for state in sorted(states, key=lambda s: -s["iteration"]):
        path = weights.get(state["checkpoint_id"])
        if path is None:
            continue
        if _sha256(path) != state["weights_sha256"]:
            logger.warning("checkpoint %s does not match its recorded sha256; skipping it", path)
            continue
        return load_file(str(path), device="cpu"), state
    raise CheckpointNotFound(f"no consistent checkpoint pair (state + weights) in {folder}")


def _optimizer_to_files(
    optimizer: torch.optim.Optimizer, prefix: str
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    state_dict = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entries in state_dict["state"].items():
        for key, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"{prefix}.{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _optimizer_from_files(
    optimizer: torch.optim.Optimizer, prefix: str, tensors: dict[str, Tensor], meta: dict[str, Any]
) -> None:
    entries: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            index, name = key[len(prefix) + 1 :].split(".", 1)
            entries.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split(".", 1)
        entries.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": entries, "param_groups": meta["param_groups"]})


def _prefixed(prefix: str, state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {f"{prefix}.{k}": v for k, v in state.items()}


def _unprefixed(prefix: str, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


# ---------------------------------------------------------------------------------------------
# Models, EMA, distributed helpers
# ---------------------------------------------------------------------------------------------


def build_generator(config: TrainConfig, *, generator: torch.Generator) -> nn.Module:
    """The network a stage trains, initialised from `generator` (before `init_from`)."""
    if config.stage == "dasr":
        return build_model(
            "dasr",
            num_experts=config.num_experts,
            backbone=_DASR_BACKBONE[config.backbone],
            scale=config.scale,
            num_feat=config.num_feat,
            num_block=config.num_block,
            weighting=config.weighting,
            mixing=config.mixing,
            per_sample_impl=config.per_sample_impl,
            predictor_feat=config.predictor_feat,
            generator=generator,
        )
    if config.backbone in ("srresnet", "edsr"):
        return build_model(
            config.backbone,
            num_feat=config.num_feat,
            num_block=config.num_block,
            scale=config.scale,
            generator=generator,
        )
    # rrdb and swinir: their Table 2 sizes; spandrel initialises them from the global RNG, so
    # draw under a fork seeded from the run's seed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        return build_model(config.backbone, scale=config.scale)


def _init_state(path: str) -> dict[str, Tensor]:
    """Weights to start from: a run folder's model.safetensors, a checkpoint's EMA, or a file."""
    source = project_path(path)
    if source.is_dir():
        source = source / "model.safetensors"
    if not source.is_file():
        raise FileNotFoundError(f"init_from: {source} does not exist")
    state = read_state_dict(source)
    if any(k.startswith("ema.") for k in state):  # a training checkpoint: take its EMA
        state = _unprefixed("ema", state)
    logger.info("initialising from %s", source)
    return state


class EMA:
    """Exponential moving average of the parameters (decay 0.999, Sec. 4.1); buffers copied."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema_params = list(self.model.parameters())
        params = [p.detach() for p in model.parameters()]
        if self.decay == 0.0:
            torch._foreach_copy_(ema_params, params)
        else:
            torch._foreach_lerp_(ema_params, params, 1.0 - self.decay)
        for ema_buffer, buffer in zip(self.model.buffers(), model.buffers(), strict=True):
            ema_buffer.copy_(buffer)


@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _setup_distributed(device_spec: str) -> tuple[_Dist, torch.device]:
    """Read torchrun's environment; init the process group (nccl on CUDA, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_spec)
    if world_size == 1:
        return _Dist(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _Dist(rank, world_size, local_rank, owns), device


def _data_parallel(
    module: nn.Module, dist_ctx: _Dist, device: torch.device, *, find_unused: bool = False
) -> nn.Module:
    """`module` wrapped in ``DistributedDataParallel`` under torchrun; itself in one process."""
    if dist_ctx.world_size == 1:
        return module
    return nn.parallel.DistributedDataParallel(
        module,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=find_unused,
    )


# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------


class _Trainer:
    """One stage: networks, optimisers, losses, data, validation, checkpoints."""

    def __init__(
        self, config: TrainConfig, *, deadline: float | None, dist_ctx: _Dist, device: torch.device
    ) -> None:
        self.config = config
        self.dist = dist_ctx
        self.device = device
        self.deadline = deadline
        self.run_dir = project_path(config.out_dir) / config.name
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.is_dasr = config.stage == "dasr"
        self.amp_dtype = autocast_dtype(device, config.precision)
        self.channels_last = (
            device.type == "cuda" if config.channels_last is None else config.channels_last
        )
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            if config.precision in ("tf32", "auto", "bf16"):
                torch.backends.cuda.matmul.allow_tf32 = True
                torch.backends.cudnn.allow_tf32 = True
        if config.batch_size % dist_ctx.world_size:
            raise ValueError(
                f"batch_size {config.batch_size} is not divisible by "
                f"{dist_ctx.world_size} processes"
            )
        self.local_batch = config.batch_size // dist_ctx.world_size

        # Which terms of Eq. 3 this stage uses.
        self.weights = {"pixel": config.pixel_weight}
        if self.is_dasr:
            self.weights["regression"] = config.regression_weight
        if config.stage != "pretrain":
            self.weights["perceptual"] = config.perceptual_weight
            self.weights["adversarial"] = config.adversarial_weight
        self.weights = {k: v for k, v in self.weights.items() if v > 0}
        if not self.weights or set(self.weights) == {"adversarial"}:
            raise ValueError(f"stage {config.stage!r}: no loss term with a positive weight")
        logger.info("stage %s: loss terms %s", config.stage, self.weights)

        # Networks (seeded), initial weights, EMA.
        init_gen = _generator(derive_seed(config.seed, "init"))
        self.generator = build_generator(config, generator=init_gen).to(device)
        if config.init_from is not None:
            self._load_initial_weights(_init_state(config.init_from))
        if self.channels_last:
            self.generator = self.generator.to(memory_format=torch.channels_last)
        self.generator.train()
        self.ema = EMA(self.generator, config.ema_decay)
        betas = tuple(config.betas)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=config.lr, betas=betas)
        self.train_forward = _data_parallel(
            self.generator,
            dist_ctx,
            device,
            find_unused=self.is_dasr and config.predictor_warmup_iters > 0,
        )
        if config.compile:
            self.train_forward = torch.compile(self.train_forward)

        self.perceptual: losses.PerceptualLoss | None = None
        if "perceptual" in self.weights:
            network = config.vgg_network
            if not config.allow_random_vgg_for_tests or config.vgg_weights is not None:
                network, _ = losses.resolve_vgg_network(network, weights_path=config.vgg_weights)
            elif network == "auto":
                network = "vgg19"
            names = losses.paper_layers(network)
            self.perceptual = losses.PerceptualLoss(
                network=network,
                layer_weights=dict(zip(names, config.perceptual_layer_weights, strict=True)),
                weights_path=config.vgg_weights,
                allow_random_vgg_for_tests=config.allow_random_vgg_for_tests,
                generator=_generator(derive_seed(config.seed, "random_vgg")),
            ).to(device)
            if self.channels_last:
                self.perceptual = self.perceptual.to(memory_format=torch.channels_last)
        self.disc: nn.Module | None = None
        self.opt_d: torch.optim.Adam | None = None
        self.gan_loss = losses.GANLoss()
        if "adversarial" in self.weights:
            if config.patch_size % 8:
                raise ValueError(
                    f"the discriminator needs patch_size % 8 == 0, got {config.patch_size}"
                )
            disc_gen = _generator(derive_seed(config.seed, "discriminator"))
            # spectral_norm draws its power-iteration vectors u, v from the global RNG: fork it.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(config.seed, "spectral_norm"))
                disc = build_model(
                    "discriminator", num_feat=config.disc_num_feat, generator=disc_gen
                )
            self.disc = disc.to(device)
            if self.channels_last:
                self.disc = self.disc.to(memory_format=torch.channels_last)
            self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=config.disc_lr, betas=betas)
            # The generator's adversarial term calls `self.disc` (frozen, no gradient sync); the
            # discriminator's own update goes through this (data-parallel) module.
            self.disc_train = _data_parallel(self.disc, dist_ctx, device)
        fp16 = self.amp_dtype == torch.float16
        self.scaler_g = torch.amp.GradScaler(device.type, enabled=fp16)
        self.scaler_d = torch.amp.GradScaler(device.type, enabled=fp16)

        self.iteration = 0
        self.nonfinite_in_a_row = 0
        self.nonfinite_total = 0
        self.metrics_rows: list[dict[str, Any]] = []
        self.val_rows: list[dict[str, Any]] = []

    # -- initialisation ---------------------------------------------------------------------

    def _load_initial_weights(self, state: dict[str, Tensor]) -> None:
        own = self.generator.state_dict()
        if set(state) == set(own):
            self.generator.load_state_dict(state)
            return
        if isinstance(self.generator, DASR):
            noise_gen = _generator(derive_seed(self.config.seed, "expert_noise"))
            self.generator.init_experts_from(
                state, noise_std=self.config.expert_init_noise, generator=noise_gen
            )
            return
        self.generator.load_state_dict(state)  # raises naming the mismatched keys

    # -- data and validation ----------------------------------------------------------------

    def prepare_data(self) -> None:
        config = self.config
        root = None if config.data_root is None else project_path(config.data_root)
        images = open_hr_images(root, preload=True)
        train_images, val_images = _holdout(config, images)
        logger.info(
            "data: %d training images, %d held out (%s)",
            len(train_images),
            0 if val_images is None else len(val_images),
            root or "embedded photos",
        )
        self.data = DataStream(
            train_images,
            patch_size=config.patch_size,
            batch_size=self.local_batch,
            level_probs=config.level_probs,
            queue_size=config.queue_size,
            block_iters=config.data_block_iters,
            seed=config.seed,
            rank=self.dist.rank,
            device=self.device,
            scale=config.scale,
            usm=config.usm_targets,
            prefetch=config.prefetch_data,
        )
        self.validation = None
        if val_images is not None and self.dist.is_main:
            self.validation = ValidationSet(
                val_images,
                levels=config.val_levels,
                crop=config.val_crop,
                seed=config.seed,
                scale=config.scale,
                device=self.device,
            )

    # -- one iteration ----------------------------------------------------------------------

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _finite(self, loss: Tensor) -> bool:
        value = loss.detach().float()
        if self.dist.world_size > 1:
            value = value.clone()
            dist.all_reduce(value)  # any rank's NaN/inf makes every rank skip
        return bool(torch.isfinite(value))

    def _lr_factor(self) -> float:
        passed = sum(1 for m in self.config.lr_milestones if self.iteration >= m)
        return self.config.lr_gamma**passed

    def _skip(self, what: str, values: dict[str, Tensor]) -> None:
        self.nonfinite_in_a_row += 1
        self.nonfinite_total += 1
        shown = {k: float(v.detach()) for k, v in values.items()}
        logger.warning(
            "iteration %d: non-finite %s loss %s; step skipped", self.iteration, what, shown
        )
        if self.nonfinite_in_a_row >= self.config.max_nonfinite_in_a_row:
            raise NonFiniteLossError(
                f"{self.nonfinite_in_a_row} non-finite losses in a row (last at iteration "
                f"{self.iteration}, {what}: {shown}); the last good checkpoint is in "
                f"{self.ckpt_dir}. Lower lr, check the data, or raise max_nonfinite_in_a_row."
            )

    def generator_losses(
        self, batch: TrainingBatch, *, warmup: bool = False
    ) -> tuple[dict[str, Tensor], Tensor | None]:
        """Loss terms of Eq. 3 (unweighted) and their weighted sum as ``terms["total"]``; and sr.

        During the predictor warm-up the total is the regression loss alone (it reaches P only).
        """
        config, weights = self.config, self.weights
        lr_img = batch.lr
        target = batch.hr_usm if config.usm_targets else batch.hr
        if self.channels_last:
            lr_img = lr_img.contiguous(memory_format=torch.channels_last)
        terms: dict[str, Tensor] = {}
        sr = None
        with self._autocast():
            if warmup:
                # One process runs P alone; under DDP the wrapped forward keeps the ranks in step.
                v_hat = (
                    self.generator.predict_degradation(lr_img)
                    if self.dist.world_size == 1
                    else self.train_forward(lr_img).v_hat
                )
                terms["regression"] = losses.regression_loss(v_hat, batch.v)
                terms["total"] = terms["regression"]
                return terms, None
            output = self.train_forward(lr_img)
            sr = _sr_of(output)
            if "pixel" in weights:
                terms["pixel"] = losses.pixel_loss(sr, target)
            if "regression" in weights:
                terms["regression"] = losses.regression_loss(output.v_hat, batch.v)
            if self.perceptual is not None:
                terms["perceptual"] = self.perceptual(sr, target)
            if self.disc is not None:
                self.disc.requires_grad_(False)
                terms["adversarial"] = self.gan_loss(self.disc(sr), True)
            terms["total"] = sum(weights[k] * v for k, v in terms.items())
        return terms, sr

    def step(self) -> dict[str, Tensor]:
        """One optimiser step (generator, then discriminator); returns the detached loss terms."""
        config = self.config
        factor = self._lr_factor()
        for group in self.opt_g.param_groups:
            group["lr"] = config.lr * factor
        batch = self.data.batch(self.iteration)
        warmup = self.is_dasr and self.iteration < config.predictor_warmup_iters
        terms, sr = self.generator_losses(batch, warmup=warmup)
        total = terms["total"]
        if not self._finite(total):
            self._skip("generator", terms)
            return {k: v.detach() for k, v in terms.items()}
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler_g.scale(total).backward()
        self.scaler_g.step(self.opt_g)
        self.scaler_g.update()
        self.ema.update(self.generator)

        if self.disc is not None and sr is not None:
            assert self.opt_d is not None
            for group in self.opt_d.param_groups:
                group["lr"] = config.disc_lr * factor
            self.disc.requires_grad_(True)
            hr = (
                batch.hr.contiguous(memory_format=torch.channels_last)
                if self.channels_last
                else batch.hr
            )
            with self._autocast():  # real and fake in one forward (no normalisation layers)
                logits = self.disc_train(torch.cat([hr, sr.detach().to(hr.dtype)]))
                real = self.gan_loss(logits[: hr.shape[0]], True)
                fake = self.gan_loss(logits[hr.shape[0] :], False)
                d_total = real + fake
            terms["disc"] = d_total
            if not self._finite(d_total):
                self._skip("discriminator", {"disc": d_total})
                return {k: v.detach() for k, v in terms.items()}
            self.opt_d.zero_grad(set_to_none=True)
            self.scaler_d.scale(d_total).backward()
            self.scaler_d.step(self.opt_d)
            self.scaler_d.update()
        self.nonfinite_in_a_row = 0
        return {k: v.detach() for k, v in terms.items()}

    def advance(self) -> dict[str, Tensor]:
        """`step`, count the iteration, and start synthesising the next batch (CUDA prefetch)."""
        terms = self.step()
        self.iteration += 1
        if self.iteration < self.config.iterations:
            self.data.prefetch(self.iteration)
        return terms

    # -- checkpoints --------------------------------------------------------------------------

    def checkpoint_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        tensors = {
            **_prefixed("generator", self.generator.state_dict()),
            **_prefixed("ema", self.ema.model.state_dict()),
        }
        opt_g_tensors, opt_g_meta = _optimizer_to_files(self.opt_g, "optimizer_g")
        tensors.update(opt_g_tensors)
        state: dict[str, Any] = {
            "format": _STATE_FORMAT,
            "iteration": self.iteration,
            "stage": self.config.stage,
            "config": to_dict(self.config),
            "config_hash": config_hash(self.config),
            "resume_hash": resume_hash(self.config),
            "nonfinite_in_a_row": self.nonfinite_in_a_row,
            "nonfinite_total": self.nonfinite_total,
            "optimizer_g": opt_g_meta,
            "scaler_g": self.scaler_g.state_dict(),
            "world_size": self.dist.world_size,
            "rng": {
                "design": "data stream re-seeded from (seed, rank, block) every data_block_iters",
                "seed": self.config.seed,
                "data_block_iters": self.config.data_block_iters,
            },
            "torch": torch.__version__,
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if self.disc is not None and self.opt_d is not None:
            tensors.update(_prefixed("discriminator", self.disc.state_dict()))
            opt_d_tensors, opt_d_meta = _optimizer_to_files(self.opt_d, "optimizer_d")
            tensors.update(opt_d_tensors)
            state["optimizer_d"] = opt_d_meta
            state["scaler_d"] = self.scaler_d.state_dict()
        return tensors, state

    def save_checkpoint(self) -> None:
        if not self.dist.is_main:
            return
        tensors, state = self.checkpoint_state()
        write_checkpoint(self.ckpt_dir, tensors, state)
        logger.info("checkpoint at iteration %d in %s", self.iteration, self.ckpt_dir)

    def restore(self) -> bool:
        """Continue from the run's checkpoint (resume='auto'); False when there is none."""
        if self.config.resume == "never":
            stale = [self.run_dir / name for name in ("metrics.csv", "val.csv")]
            stale += [
                self.ckpt_dir / f"{stem}.{ext}"
                for stem in ("latest", "previous", "next")
                for ext in ("safetensors", "state.json")
            ]
            stale = [path for path in stale if path.exists()]
            if stale:
                logger.warning(
                    "resume='never': starting over in %s; removing its checkpoints and logs",
                    self.run_dir,
                )
                if self.dist.is_main:
                    for path in stale:
                        path.unlink()
            return False
        try:
            tensors, state = load_checkpoint(self.ckpt_dir)
        except CheckpointNotFound:
            if any(self.ckpt_dir.glob("*.state.json")):
                raise
            return False
        if state["resume_hash"] != resume_hash(self.config):
            saved = state["config"]
            now = to_dict(self.config)
            changed = sorted(
                k for k in now if k not in RESUME_FREE_FIELDS and saved.get(k) != now[k]
            )
            raise ConfigError(
                f"cannot resume {self.ckpt_dir}: the config differs in {changed} (only "
                f"{sorted(RESUME_FREE_FIELDS)} may change); use another name or resume='never'"
            )
        if state["world_size"] != self.dist.world_size:
            logger.warning(
                "resuming a %d-process run with %d processes: the data stream differs from an "
                "uninterrupted run",
                state["world_size"],
                self.dist.world_size,
            )
        self.generator.load_state_dict(_unprefixed("generator", tensors))
        self.ema.model.load_state_dict(_unprefixed("ema", tensors))
        _optimizer_from_files(self.opt_g, "optimizer_g", tensors, state["optimizer_g"])
        self.scaler_g.load_state_dict(state["scaler_g"])
        if self.disc is not None and self.opt_d is not None:
            self.disc.load_state_dict(_unprefixed("discriminator", tensors))
            _optimizer_from_files(self.opt_d, "optimizer_d", tensors, state["optimizer_d"])
            self.scaler_d.load_state_dict(state["scaler_d"])
        self.iteration = state["iteration"]
        self.nonfinite_in_a_row = state["nonfinite_in_a_row"]
        self.nonfinite_total = state["nonfinite_total"]
        self._load_logs()
        logger.info("resumed %s at iteration %d", self.run_dir, self.iteration)
        return True

    def _load_logs(self) -> None:
        """Keep the log rows up to the resumed iteration (later rows belong to a lost future)."""
        for attr, name in (("metrics_rows", "metrics.csv"), ("val_rows", "val.csv")):
            path = self.run_dir / name
            if path.is_file() and path.stat().st_size:
                frame = pd.read_csv(path)
                frame = frame[frame["iteration"] <= self.iteration]
                setattr(self, attr, frame.to_dict("records"))

    # -- outputs --------------------------------------------------------------------------------

    def write_logs(self) -> None:
        if not self.dist.is_main:
            return
        for rows, name in ((self.metrics_rows, "metrics.csv"), (self.val_rows, "val.csv")):
            if rows:
                with atomic_write(self.run_dir / name) as tmp:
                    pd.DataFrame(rows).to_csv(tmp, index=False)

    def validate(self) -> list[dict[str, Any]]:
        if self.validation is None:
            return []
        rows = [
            {"iteration": self.iteration, **row} for row in self.validation.evaluate(self.ema.model)
        ]
        self.val_rows = [r for r in self.val_rows if r["iteration"] != self.iteration] + rows
        for row in rows:
            logger.info(
                "iteration %d, %s: PSNR-Y %.2f dB (bicubic %.2f dB, %d images)",
                self.iteration,
                row["level"],
                row["psnr_y_db"],
                row["bicubic_psnr_y_db"],
                row["n_images"],
            )
        return rows

    def export(self) -> Path | None:
        if not self.dist.is_main:
            return None
        path = self.run_dir / "model.safetensors"
        model = self.ema.model
        if self.channels_last:  # export a plainly laid-out copy
            model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
        save_weights(
            model,
            path,
            dtype=_EXPORT_DTYPES[self.config.export_dtype],
            metadata={
                "iteration": self.iteration,
                "stage": self.config.stage,
                "config_hash": config_hash(self.config),
                "ema_decay": self.config.ema_decay,
            },
        )
        return path

    def write_run_json(self, status: str, extra: dict[str, Any] | None = None) -> None:
        if not self.dist.is_main:
            return
        record = {
            "status": status,
            "iteration": self.iteration,
            "config": to_dict(self.config),
            "config_hash": config_hash(self.config),
            "resume_hash": resume_hash(self.config),
            "world_size": self.dist.world_size,
            "precision": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "fp32",
            "channels_last": self.channels_last,
            "loss_weights": self.weights,
            "perceptual": None
            if self.perceptual is None
            else {"network": self.perceptual.network, "weights": str(self.perceptual.weights_file)},
            "metadata": run_metadata(config=self.config, seed=self.config.seed, device=self.device),
            **(extra or {}),
        }
        atomic_write_text(
            self.run_dir / "run.json", json.dumps(record, indent=2, default=str) + "\n"
        )


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def _stop_now(trainer: _Trainer) -> bool:
    """True when the wall-clock budget is used (agreed by every process)."""
    if trainer.deadline is None:
        return False
    stop = time.monotonic() >= trainer.deadline
    if trainer.dist.world_size > 1:
        flag = torch.tensor([1.0 if stop else 0.0], device=trainer.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        stop = bool(flag.item() > 0)
    return stop


def _metrics_row(
    trainer: _Trainer, sums: dict[str, Tensor], count: int, seconds: float
) -> dict[str, Any]:
    """The metrics.csv row of the `count` iterations up to `trainer.iteration`: mean losses."""
    row: dict[str, Any] = {"iteration": trainer.iteration}
    row.update({f"loss_{k}": float(v) / count for k, v in sums.items()})
    row["lr"] = trainer.opt_g.param_groups[0]["lr"]
    row["it_per_s"] = count / max(seconds, 1e-9)
    row["nonfinite_total"] = trainer.nonfinite_total
    return row


def _run_stage(
    config: TrainConfig, *, deadline: float | None, dist_ctx: _Dist, device: torch.device
) -> Path:
    trainer = _Trainer(config, deadline=deadline, dist_ctx=dist_ctx, device=device)
    if dist_ctx.is_main:  # temporaries a killed run left (0-byte metrics.csv, model, ...)
        remove_stale_temporaries(trainer.run_dir)
    if not trainer.restore():
        trainer.iteration = config.start_iteration
    trainer.prepare_data()
    start_iteration = trainer.iteration
    trainer.write_run_json("running")
    writer = None
    if config.tensorboard and dist_ctx.is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(trainer.run_dir / "tensorboard"))
    bar = None
    if config.progress and dist_ctx.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=config.iterations,
            initial=trainer.iteration,
            desc=f"{config.name} ({config.stage})",
            mininterval=2.0,
            dynamic_ncols=True,
        )
    sums: dict[str, Tensor] = {}
    count = 0
    tick = time.monotonic()
    started = tick
    status = "finished"
    check_every = 10 if dist_ctx.world_size > 1 else 1
    try:
        while trainer.iteration < config.iterations:
            if trainer.iteration % check_every == 0 and _stop_now(trainer):
                status = "time_limit"
                logger.info("time limit reached at iteration %d", trainer.iteration)
                break
            terms = trainer.advance()
            count += 1
            for key, value in terms.items():
                sums[key] = sums[key] + value.float() if key in sums else value.float()
            if bar is not None:
                bar.update(1)
            i = trainer.iteration
            if i % config.log_every == 0 or i == config.iterations:
                now = time.monotonic()
                row = _metrics_row(trainer, sums, count, now - tick)
                trainer.metrics_rows.append(row)
                if bar is not None:
                    bar.set_postfix(loss=f"{row.get('loss_total', math.nan):.4f}")
                if writer is not None:
                    for key, value in row.items():
                        if key != "iteration":
                            writer.add_scalar(key, value, i)
                sums, count, tick = {}, 0, now
                trainer.write_logs()
            if dist_ctx.is_main and (i % config.val_every == 0 or i == config.iterations):
                rows = trainer.validate()
                if writer is not None:
                    for row in rows:
                        writer.add_scalar(f"val/psnr_y_db/{row['level']}", row["psnr_y_db"], i)
                trainer.write_logs()
            if i % config.checkpoint_every == 0 or i == config.iterations:
                trainer.save_checkpoint()
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
    if count:  # the iterations since the last log row (a time limit stopped the run)
        trainer.metrics_rows.append(_metrics_row(trainer, sums, count, time.monotonic() - tick))
    if status == "time_limit" or not any(
        r["iteration"] == trainer.iteration for r in trainer.val_rows
    ):
        trainer.validate()
    trainer.write_logs()
    if (
        not (trainer.ckpt_dir / "latest.state.json").exists()
        or _latest_iteration(trainer.ckpt_dir) != trainer.iteration
    ):
        trainer.save_checkpoint()
    trainer.export()
    elapsed = time.monotonic() - started
    done = trainer.iteration - start_iteration
    final = [r for r in trainer.val_rows if r["iteration"] == trainer.iteration]
    trainer.write_run_json(
        status,
        {
            "iterations_this_call": done,
            "wall_time_s": elapsed,
            "it_per_s_this_call": done / elapsed if elapsed > 0 else None,
            "validation": final,
        },
    )
    logger.info(
        "%s: %s at iteration %d (%d this call, %.1f s)",
        config.name,
        status,
        trainer.iteration,
        done,
        elapsed,
    )
    return trainer.run_dir


def _latest_iteration(folder: Path) -> int | None:
    try:
        return json.loads((folder / "latest.state.json").read_text(encoding="utf-8"))["iteration"]
    except (OSError, json.JSONDecodeError, KeyError):
        return None


def stage_configs(config: TrainConfig) -> list[TrainConfig]:
    """The stages `config` runs: itself, or (pretrain, dasr) for stage='both'."""
    if config.stage != "both":
        return [config]
    pretrain = dataclasses.replace(
        config,
        stage="pretrain",
        name=f"{config.name}_pretrain",
        iterations=config.pretrain_iterations,
        init_from=config.init_from,
    )
    run_dir = Path(config.out_dir) / pretrain.name
    dasr = dataclasses.replace(config, stage="dasr", init_from=run_dir.as_posix())
    return [pretrain, dasr]


def train(config: TrainConfig) -> Path:
    """Run the stage(s) of `config`; returns the (last) run folder ``<out_dir>/<name>``.

    Resumes automatically (resume='auto'), stops cleanly at `time_limit_minutes`, writes
    ``metrics.csv``, ``val.csv``, ``run.json``, ``checkpoints/`` and ``model.safetensors``.
    Under torchrun every process calls this; rank 0 writes.
    """
    deadline = None
    if config.time_limit_minutes is not None:
        deadline = time.monotonic() + 60.0 * config.time_limit_minutes
    dist_ctx, device = _setup_distributed(config.device)
    try:
        run_dir = Path()
        for stage_config in stage_configs(config):
            run_dir = _run_stage(stage_config, deadline=deadline, dist_ctx=dist_ctx, device=device)
            if dist_ctx.world_size > 1:
                dist.barrier()
            if deadline is not None and time.monotonic() >= deadline:
                break
        return run_dir
    finally:
        if dist_ctx.owns_group:
            dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# Reading a run back
# ---------------------------------------------------------------------------------------------


def _run_config(run_dir: Path) -> TrainConfig:
    record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    return load_config(TrainConfig, record["config"])


def validation_summary(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """The last validation of a run: level, psnr_y_db, bicubic_psnr_y_db, gain_db, n_images."""
    frame = pd.read_csv(Path(run_dir) / "val.csv")
    last = frame[frame["iteration"] == frame["iteration"].max()].copy()
    last["gain_db"] = last["psnr_y_db"] - last["bicubic_psnr_y_db"]
    return last.reset_index(drop=True)


def validation_example(
    run_dir: str | os.PathLike[str],
    *,
    level: str = "standard",
    index: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """LR, bicubic, SR (the exported EMA model) and HR of one held-out image of a run.

    Rebuilds the run's validation set from its recorded config (same seed, same images), so the
    images are the ones behind ``val.csv``. Returns tensors [3, H, W] in [0, 1] and the PSNRs.
    """
    run_dir = Path(run_dir)
    config = _run_config(run_dir)
    root = None if config.data_root is None else project_path(config.data_root)
    _, val_images = _holdout(config, open_hr_images(root))
    if val_images is None:
        raise ValueError(f"run {run_dir} has no held-out images (val_images=0)")
    name = val_images.names[index]
    subset = val_images.subset([index])
    device = resolve_device(device)
    val = ValidationSet(
        subset,
        levels=(level,),
        crop=config.val_crop,
        seed=config.seed,
        scale=config.scale,
        device=device,
    )
    item = val.items[0]
    model = load_model(run_dir / "model.safetensors", device=device).float()
    with torch.no_grad():
        sr = _sr_of(model(item.lr)).float().clamp(0, 1)
    bicubic = _bicubic_up(item.lr, config.scale)
    return {
        "name": name,
        "level": level,
        "lr": item.lr[0].cpu(),
        "bicubic": bicubic[0].cpu(),
        "sr": sr[0].cpu(),
        "hr": item.hr[0].cpu(),
        "psnr_y_db": psnr_y(sr, item.hr),
        "bicubic_psnr_y_db": item.bicubic_psnr,
    }


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def config_from_parameters(
    parameters: dict[str, Any], *, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """A `TrainConfig` from notebook parameters: the fields by name plus an ``overrides`` dict.

    The notebook and ``python -m dasrlib.train --params FILE`` both build their config here, so
    one parameter file gives the same run either way.
    """
    values = dict(parameters)
    extra = values.pop("overrides", None) or {}
    return load_config(TrainConfig, {**values, **extra}, overrides=overrides)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dasrlib.train --params notebooks/params/demo.yaml [--set key=value ...]``."""
    parser = argparse.ArgumentParser(
        prog="python -m dasrlib.train",
        description="Train SRResNet / DASR (what notebooks/train.ipynb runs).",
    )
    parser.add_argument("--params", type=Path, help="a notebook parameter file (YAML)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override one field"
    )
    parser.add_argument("--print-config", action="store_true", help="print the config and exit")
    args = parser.parse_args(argv)
    sets = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set expects KEY=VALUE, got {item!r}")
        sets[key.strip()] = yaml.safe_load(value)
    try:
        parameters = {} if args.params is None else read_config_file(args.params)
        config = config_from_parameters(parameters, overrides=sets)
        resolve_device(config.device)
    except (ConfigError, DeviceUnavailableError) as error:
        print(f"python -m dasrlib.train: error: {error}", file=sys.stderr)
        return 2
    if args.print_config:
        print(yaml.safe_dump(to_dict(config), sort_keys=False))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        run_dir = train(config)
    except (*TRAINING_INPUT_ERRORS, CheckpointError) as error:
        print(f"python -m dasrlib.train: error: {error}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"run folder: {run_dir}")
        if (run_dir / "val.csv").is_file():
            print(validation_summary(run_dir).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
