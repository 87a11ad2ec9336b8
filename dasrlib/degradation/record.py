"""What `degrade` drew: per-sample physical parameters of every operation of a batch.

Each field is a [B] tensor on the device of the degraded batch (the resize scale, which changes the
tensor shape, is one value per batch). Operations that were drawn but not applied (e.g. the second
blur, skipped with probability 0.2) keep their drawn values with `applied` False: the official
vector leaves them at 0, the reference layout writes them anyway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from .levels import FINAL_ORDERS, NOISE_TYPES, RESIZE_MODES, Level
from .vector import encode_vector

__all__ = [
    "BlurRecord",
    "DegradationRecord",
    "FinalRecord",
    "JpegRecord",
    "NoiseRecord",
    "ResizeRecord",
    "SincRecord",
    "StageRecord",
]


@dataclass(frozen=True)
class BlurRecord:
    """Gaussian blur: [B] applied, isotropic, kernel_size (odd int), sigmas (px), rotation (rad)."""

    applied: Tensor
    isotropic: Tensor
    kernel_size: Tensor
    sigma_x: Tensor
    sigma_y: Tensor
    rotation: Tensor


@dataclass(frozen=True)
class ResizeRecord:
    """Random resize: one direction / scale / output size per batch, [B] mode index."""

    direction: str
    scale: float
    size: tuple[int, int]
    mode: Tensor


@dataclass(frozen=True)
class NoiseRecord:
    """Additive noise: [B] applied, poisson (else Gaussian), level, gray.

    `level` is the Gaussian sigma in 0-255 units, or the Poisson scale.
    """

    applied: Tensor
    poisson: Tensor
    level: Tensor
    gray: Tensor


@dataclass(frozen=True)
class JpegRecord:
    """JPEG compression: [B] applied, quality (float, as drawn)."""

    applied: Tensor
    quality: Tensor


@dataclass(frozen=True)
class SincRecord:
    """Final sinc filter: [B] applied, kernel_size (odd int), omega_c (rad / px)."""

    applied: Tensor
    kernel_size: Tensor
    omega_c: Tensor


@dataclass(frozen=True)
class StageRecord:
    """One stage; None where the level has no such operation."""

    blur: BlurRecord | None
    resize: ResizeRecord | None
    noise: NoiseRecord | None
    jpeg: JpegRecord | None


@dataclass(frozen=True)
class FinalRecord:
    """Final step: [B] resize mode; optional sinc and JPEG; [B] sinc_first when both exist."""

    mode: Tensor
    antialias: bool
    sinc: SincRecord | None
    jpeg: JpegRecord | None
    sinc_first: Tensor | None


def _item(t: Tensor, i: int) -> Any:
    value = t[i].item()
    return float(value) if isinstance(value, float) else value


@dataclass(frozen=True)
class DegradationRecord:
    """Every parameter `degrade` drew for a batch of `batch_size` images at `level`."""

    level: Level
    batch_size: int
    stages: tuple[StageRecord, ...]
    final: FinalRecord

    def vector(self, layout: str = "official") -> Tensor:
        """The 33-slot regression target v, [B, 33]; see `dasrlib.degradation.vector`."""
        return encode_vector(self, layout=layout)

    def to_dicts(self) -> list[dict[str, Any]]:
        """Physical parameters per sample, JSON-serialisable, named as in `decode_vector`.

        Besides the slot names, each dict says what was applied (`blur2_applied`, ...), the
        resize direction and output size, and whether the final step antialiased.
        """
        return [self._sample_dict(i) for i in range(self.batch_size)]

    def _sample_dict(self, i: int) -> dict[str, Any]:
        out: dict[str, Any] = {"level": self.level.value}
        for n, stage in enumerate(self.stages, start=1):
            if stage.blur is not None:
                blur = stage.blur
                out[f"blur{n}_applied"] = bool(blur.applied[i])
                out[f"blur{n}_isotropic"] = bool(blur.isotropic[i])
                out[f"blur{n}_kernel_size"] = int(blur.kernel_size[i])
                out[f"blur{n}_sigma_x"] = _item(blur.sigma_x, i)
                out[f"blur{n}_sigma_y"] = _item(blur.sigma_y, i)
                out[f"blur{n}_rotation"] = _item(blur.rotation, i)
            if stage.resize is not None:
                resize = stage.resize
                out[f"resize{n}_direction"] = resize.direction
                out[f"resize{n}_scale"] = resize.scale
                out[f"resize{n}_size"] = list(resize.size)
                out[f"resize{n}_mode"] = RESIZE_MODES[int(resize.mode[i])]
            if stage.noise is not None:
                noise = stage.noise
                out[f"noise{n}_applied"] = bool(noise.applied[i])
                out[f"noise{n}_type"] = NOISE_TYPES[int(noise.poisson[i])]
                out[f"noise{n}_level"] = _item(noise.level, i)
                out[f"noise{n}_gray"] = bool(noise.gray[i])
            if stage.jpeg is not None:
                out[f"jpeg{n}_applied"] = bool(stage.jpeg.applied[i])
                out[f"jpeg{n}_quality"] = _item(stage.jpeg.quality, i)
        final = self.final
        if final.sinc is not None:
            out["sinc_applied"] = bool(final.sinc.applied[i])
            out["sinc_kernel_size"] = int(final.sinc.kernel_size[i])
            out["sinc_omega_c"] = _item(final.sinc.omega_c, i)
        if final.jpeg is not None:
            out["jpeg2_applied"] = bool(final.jpeg.applied[i])
            out["jpeg2_quality"] = _item(final.jpeg.quality, i)
        if final.sinc_first is not None:
            out["final_order"] = FINAL_ORDERS[0 if bool(final.sinc_first[i]) else 1]
        out["final_mode"] = RESIZE_MODES[int(final.mode[i])]
        out["final_antialias"] = final.antialias
        for key, value in out.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"non-finite {key}={value} in degradation record sample {i}")
        return out
