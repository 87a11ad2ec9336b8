"""Training pairs for DASR (Sec. 4.1): degrade HR patches on the device and shuffle them through a
192-sample queue, keeping each image's v and level with it.

The reference implementation shuffles the queued LR and HR images but not their degradation
vectors, so after the first pass the regression targets no longer belong to their images. Here
every queued field is indexed by the same permutation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Protocol

import torch
from torch import Tensor

from .levels import Level, level_index
from .ops import usm_sharpen
from .pipeline import _categorical, degrade
from .vector import NUM_SLOTS

__all__ = ["PatchSource", "TrainingBatch", "TrainingPairSource", "batch_fields"]

logger = logging.getLogger(__name__)

#: The levels drawn for training, in the order of `level_probs`.
TRAINING_LEVELS: tuple[Level, ...] = (Level.WEAK, Level.STANDARD, Level.SEVERE)


class PatchSource(Protocol):
    """Anything that returns HR patches: `sample(batch_size) -> [B, 3, P, P]` in [0, 1]."""

    def sample(self, batch_size: int) -> Tensor: ...


@dataclass(frozen=True)
class TrainingBatch:
    """One training batch, every field aligned per sample.

    Attributes:
        lr: [B, 3, P/scale, P/scale] degraded input, 8-bit levels.
        hr: [B, 3, P, P] ground truth.
        hr_usm: [B, 3, P, P] unsharp-masked ground truth (equal to `hr` when usm is off).
        v: [B, 33] degradation vector of `lr` (official layout unless asked otherwise).
        level: [B] int64 `level_index` of the level that produced each `lr`.
    """

    lr: Tensor
    hr: Tensor
    hr_usm: Tensor
    v: Tensor
    level: Tensor


class TrainingPairSource:
    """Synthesise (lr, hr, hr_usm, v, level) batches with a shuffling queue (Sec. 4.1).

    Each call of `next_batch` draws `batch_size` HR patches from `sampler`, picks one level for the
    whole batch with `level_probs` (weak, standard, severe), degrades the batch on `device` and
    swaps it into the queue for `batch_size` randomly chosen queued samples, which it returns. The
    first call fills the queue (queue_size / batch_size batches) before returning anything, so
    every returned batch mixes levels and resize scales.

    Args:
        sampler: has `sample(batch_size) -> [B, 3, P, P]` (e.g. `dasrlib.data.PatchSampler`).
        batch_size: samples per returned batch; must divide `queue_size`.
        level_probs: probabilities of weak, standard, severe (paper: 0.3, 0.3, 0.4).
        queue_size: samples held in the queue (paper: 192); 0 disables the queue.
        generator: source of every random draw (levels, degradations, queue permutation); keep it
            on `device`.
        device: where degradation runs and the queue lives.
        scale: down-sampling factor.
        usm: also return the unsharp-masked HR (the pixel and perceptual losses' target).
        degrade_sharpened: synthesise LR from the sharpened HR, as the reference code does
            (Real-ESRGAN and DASR both degrade `usm(gt)`); needs `usm`.
        layout: vector layout, "official" or "official-reference".
    """

    def __init__(
        self,
        sampler: PatchSource,
        *,
        batch_size: int,
        level_probs: Sequence[float] = (0.3, 0.3, 0.4),
        queue_size: int = 192,
        generator: torch.Generator,
        device: torch.device | str,
        scale: int = 4,
        usm: bool = True,
        degrade_sharpened: bool = True,
        layout: str = "official",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if queue_size < 0 or (queue_size and queue_size % batch_size):
            raise ValueError(f"queue_size {queue_size} must be a multiple of batch {batch_size}")
        if (
            len(level_probs) != len(TRAINING_LEVELS)
            or min(level_probs) < 0
            or sum(level_probs) <= 0
        ):
            raise ValueError(
                f"level_probs must be 3 non-negative weights, got {tuple(level_probs)}"
            )
        if degrade_sharpened and not usm:
            raise ValueError("degrade_sharpened=True needs usm=True")
        self.sampler = sampler
        self.batch_size = batch_size
        self.level_probs = tuple(float(p) for p in level_probs)
        self.queue_size = queue_size
        self.generator = generator
        self.device = torch.device(device)
        self.scale = scale
        self.usm = usm
        self.degrade_sharpened = degrade_sharpened
        self.layout = layout
        self._queue: TrainingBatch | None = None
        self._filled = 0

    def _fresh_batch(self) -> TrainingBatch:
        """Draw HR patches, one level, and degrade them (no queue)."""
        hr = self.sampler.sample(self.batch_size).to(self.device, torch.float32)
        if hr.ndim != 4 or hr.shape[0] != self.batch_size or hr.shape[1] != 3:
            raise ValueError(
                f"sampler returned shape {tuple(hr.shape)}; expected [{self.batch_size}, 3, P, P]"
            )
        level = TRAINING_LEVELS[int(_categorical(self.generator, 1, self.level_probs))]
        hr_usm = usm_sharpen(hr) if self.usm else hr
        source = hr_usm if self.degrade_sharpened else hr
        lr, record = degrade(source, level, generator=self.generator, scale=self.scale)
        v = record.vector(layout=self.layout)
        levels = torch.full((self.batch_size,), level_index(level), device=self.device)
        return TrainingBatch(lr=lr, hr=hr, hr_usm=hr_usm, v=v, level=levels)

    def _allocate(self, like: TrainingBatch) -> TrainingBatch:
        def empty(t: Tensor) -> Tensor:
            return t.new_empty((self.queue_size, *t.shape[1:]))

        logger.info(
            "allocating a %d-sample training-pair queue on %s", self.queue_size, self.device
        )
        return TrainingBatch(*(empty(t) for t in _fields(like)))

    def next_batch(self) -> TrainingBatch:
        """The next shuffled training batch (fills the queue on the first call)."""
        if self.queue_size == 0:
            return self._fresh_batch()
        while self._filled < self.queue_size:
            fresh = self._fresh_batch()
            if self._queue is None:
                self._queue = self._allocate(fresh)
            rows = slice(self._filled, self._filled + self.batch_size)
            for stored, new in zip(_fields(self._queue), _fields(fresh), strict=True):
                stored[rows] = new
            self._filled += self.batch_size
        assert self._queue is not None
        fresh = self._fresh_batch()
        # Swapping B uniformly chosen queued samples for the new ones is what the reference's
        # "permute the whole queue, pop the first B, push the new B" does, without moving the queue.
        perm = torch.randperm(
            self.queue_size, generator=self.generator, device=self.generator.device
        )
        idx = perm[: self.batch_size].to(self.device)
        out = []
        for stored, new in zip(_fields(self._queue), _fields(fresh), strict=True):
            out.append(stored[idx].clone())
            stored[idx] = new
        batch = TrainingBatch(*out)
        if batch.v.shape[1] != NUM_SLOTS:
            raise AssertionError(f"v has {batch.v.shape[1]} slots, expected {NUM_SLOTS}")
        return batch

    def queue_state(self) -> dict[str, Tensor]:
        """The queued samples (the live tensors, not copies) and how many are filled: with the
        generator's state, what a resume needs to continue the stream exactly
        (`load_queue_state`)."""
        state = {"filled": torch.tensor(self._filled)}
        if self._queue is not None:
            state.update({f"queue.{name}": t for name, t in batch_fields(self._queue).items()})
        return state

    def load_queue_state(self, state: dict[str, Tensor]) -> None:
        """Take back a `queue_state`; ValueError when it does not fit this source's queue."""
        filled = int(state["filled"])
        names = [f.name for f in fields(TrainingBatch)]
        queued = {name: state.get(f"queue.{name}") for name in names}
        held = {name: t for name, t in queued.items() if t is not None}
        if (held and len(held) != len(names)) or (filled and not held):
            raise ValueError(
                f"queue state holds {sorted(held)} with {filled} filled, expected all of {names}"
            )
        rows = {t.shape[0] for t in held.values()}
        if filled % self.batch_size or filled > self.queue_size or rows - {self.queue_size}:
            raise ValueError(
                f"queue state ({filled} filled, {sorted(rows)} rows) does not fit a "
                f"{self.queue_size}-sample queue of batch {self.batch_size}"
            )
        self._queue = (
            TrainingBatch(**{k: t.to(self.device) for k, t in held.items()}) if held else None
        )
        self._filled = filled


def batch_fields(batch: TrainingBatch) -> dict[str, Tensor]:
    """The fields of `batch` by name (no copies, unlike `dataclasses.asdict`)."""
    return {f.name: getattr(batch, f.name) for f in fields(batch)}


def _fields(batch: TrainingBatch) -> tuple[Tensor, ...]:
    return tuple(batch_fields(batch).values())
