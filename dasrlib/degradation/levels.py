"""The degradation levels of DASR (Sec. 3.2, Fig. 2) declared as data.

A level is an ordered tuple of stages, each an ordered set of operations (blur, resize, noise,
JPEG), followed by a final step that resizes to HR / scale. The severe level adds a sinc filter to
the final resize and a final JPEG, applied in a random order. `dasrlib.degradation.pipeline.degrade`
walks any `LevelSpec`; nothing in the library branches on the level's name.

Every range and probability below is the paper's (Sec. 3.2, Fig. 2), confirmed against the public
reference implementation (csjliang/DASR, options/train/DASR/train_DASR.yml). Override a field with
`dataclasses.replace` to force a branch, e.g. `replace(spec, final=replace(spec.final, sinc=...))`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

__all__ = [
    "FINAL_ORDERS",
    "LEVEL_SPECS",
    "NOISE_TYPES",
    "RESIZE_MODES",
    "BlurSpec",
    "FinalSpec",
    "JpegSpec",
    "Level",
    "LevelSpec",
    "NoiseSpec",
    "ResizeSpec",
    "SincSpec",
    "StageSpec",
    "level_index",
    "level_spec",
]

Range = tuple[float, float]

#: Interpolation modes of every random resize, in the order of the 33-slot one-hot groups.
RESIZE_MODES: tuple[str, ...] = ("area", "bilinear", "bicubic")
#: Names of the noise types, in the order of the one-hot noise-type slots.
NOISE_TYPES: tuple[str, ...] = ("gaussian", "poisson")
#: Names of the two orders of the severe final step, in the order of slots 28-29.
FINAL_ORDERS: tuple[str, ...] = ("resize_sinc_then_jpeg", "jpeg_then_resize_sinc")


class Level(str, Enum):
    """Degradation level; the enum order defines `level_index` (bicubic 0 ... severe 3)."""

    BICUBIC = "bicubic"
    WEAK = "weak"
    STANDARD = "standard"
    SEVERE = "severe"

    @classmethod
    def _missing_(cls, value: object) -> Level:
        """Accept any letter case; otherwise fail listing the valid names."""
        if isinstance(value, str):
            for member in cls:
                if member.value == value.strip().lower():
                    return member
        valid = ", ".join(member.value for member in cls)
        raise ValueError(f"unknown degradation level {value!r}; valid levels: {valid}")


def level_index(level: Level | str) -> int:
    """Integer index of a level (bicubic 0, weak 1, standard 2, severe 3), as in `TrainingBatch`."""
    return list(Level).index(Level(level))


@dataclass(frozen=True)
class BlurSpec:
    """Gaussian blur with a per-sample kernel (isotropic with `iso_prob`, else anisotropic).

    Kernel sizes are odd integers drawn uniformly in `kernel_size`; sigma_x and sigma_y are drawn
    in `sigma` (pixels), the rotation in `rotation` (radians). Isotropic kernels have
    sigma_y = sigma_x and rotation 0, as in the reference. Sizes follow the paper ([7, 21]); the
    reference's `range(ceil(7 / 2), ceil(21 / 2))` never draws 7, only 9 ... 21, while its vector
    still normalises by [7, 21], which is what the 33-slot encoding here does too.
    """

    sigma: Range
    prob: float = 1.0
    iso_prob: float = 0.65
    kernel_size: tuple[int, int] = (7, 21)
    rotation: Range = (-math.pi, math.pi)


@dataclass(frozen=True)
class ResizeSpec:
    """Random resize: up / down / keep with `probs`; scale uniform in [1, hi] or [lo, 1].

    The scale is one draw per batch (it changes the tensor shape); the interpolation mode is drawn
    per sample from `modes`. `relative_to="input"` scales the current image; `"target"` scales the
    final LR size (HR / scale), as the reference does in the second severe stage.
    """

    probs: tuple[float, float, float]
    scale: Range
    modes: tuple[str, ...] = RESIZE_MODES
    relative_to: str = "input"


@dataclass(frozen=True)
class NoiseSpec:
    """Additive Gaussian (probability `gaussian_prob`) or Poisson noise, gray with `gray_prob`.

    `gaussian_sigma` is in 0-255 units; `poisson_scale` multiplies the shot noise of the image
    quantised to its number of distinct 8-bit levels (rounded up to a power of two).
    """

    gaussian_sigma: Range
    poisson_scale: Range
    prob: float = 1.0
    gaussian_prob: float = 0.5
    gray_prob: float = 0.4


@dataclass(frozen=True)
class JpegSpec:
    """JPEG compression with a per-sample quality drawn uniformly in `quality`."""

    quality: Range
    prob: float = 1.0


@dataclass(frozen=True)
class SincSpec:
    """Circular low-pass (2-D sinc) filter of the final step, per sample with probability `prob`."""

    prob: float = 0.8
    kernel_size: tuple[int, int] = (7, 21)
    omega_c: Range = (math.pi / 3, math.pi)


@dataclass(frozen=True)
class StageSpec:
    """One degradation stage: blur, resize, noise, JPEG in that order; None skips an operation."""

    blur: BlurSpec | None = None
    resize: ResizeSpec | None = None
    noise: NoiseSpec | None = None
    jpeg: JpegSpec | None = None


@dataclass(frozen=True)
class FinalSpec:
    """Final resize to HR / scale with a per-sample mode, plus the optional sinc filter and JPEG.

    With both `sinc` and `jpeg`, each sample takes "[resize + sinc] then JPEG" with probability
    `sinc_first_prob`, else "JPEG then [resize + sinc]". `antialias` applies to bilinear/bicubic
    (the random resizes of the reference never antialias; the bicubic test set does).
    """

    modes: tuple[str, ...] = RESIZE_MODES
    sinc: SincSpec | None = None
    jpeg: JpegSpec | None = None
    sinc_first_prob: float = 0.5
    antialias: bool = False


@dataclass(frozen=True)
class LevelSpec:
    """A whole level: the stages in order, then the final step."""

    level: Level
    stages: tuple[StageSpec, ...]
    final: FinalSpec


_WEAK = LevelSpec(
    level=Level.WEAK,
    stages=(
        StageSpec(
            blur=BlurSpec(sigma=(0.2, 0.8)),
            resize=ResizeSpec(probs=(0.1, 0.2, 0.7), scale=(0.85, 1.2)),
            noise=NoiseSpec(gaussian_sigma=(1.0, 10.0), poisson_scale=(0.05, 0.5)),
            jpeg=JpegSpec(quality=(90.0, 95.0)),
        ),
    ),
    final=FinalSpec(),
)

_STANDARD = LevelSpec(
    level=Level.STANDARD,
    stages=(
        StageSpec(
            blur=BlurSpec(sigma=(0.2, 1.5)),
            resize=ResizeSpec(probs=(0.3, 0.4, 0.3), scale=(0.5, 1.2)),
            noise=NoiseSpec(gaussian_sigma=(1.0, 20.0), poisson_scale=(0.05, 1.5)),
            jpeg=JpegSpec(quality=(50.0, 95.0)),
        ),
    ),
    final=FinalSpec(),
)

_SEVERE = LevelSpec(
    level=Level.SEVERE,
    stages=(
        StageSpec(
            blur=BlurSpec(sigma=(0.2, 3.0)),
            resize=ResizeSpec(probs=(0.2, 0.7, 0.1), scale=(0.15, 1.5)),
            noise=NoiseSpec(gaussian_sigma=(1.0, 30.0), poisson_scale=(0.05, 3.0)),
            jpeg=JpegSpec(quality=(30.0, 95.0)),
        ),
        StageSpec(
            blur=BlurSpec(sigma=(0.2, 1.5), prob=0.8),
            resize=ResizeSpec(probs=(0.3, 0.4, 0.3), scale=(0.3, 1.2), relative_to="target"),
            noise=NoiseSpec(gaussian_sigma=(1.0, 25.0), poisson_scale=(0.05, 2.5)),
        ),
    ),
    final=FinalSpec(sinc=SincSpec(), jpeg=JpegSpec(quality=(30.0, 95.0))),
)

# Plain bicubic x4 down-sampling: torch bicubic (a = -0.75) with antialias=True, i.e. the kernel is
# widened by the scale factor like MATLAB imresize, but it is not bit-identical to imresize.
_BICUBIC = LevelSpec(
    level=Level.BICUBIC,
    stages=(),
    final=FinalSpec(modes=("bicubic",), antialias=True),
)

#: The default specification of every level.
LEVEL_SPECS: dict[Level, LevelSpec] = {
    Level.BICUBIC: _BICUBIC,
    Level.WEAK: _WEAK,
    Level.STANDARD: _STANDARD,
    Level.SEVERE: _SEVERE,
}


def level_spec(level: Level | str) -> LevelSpec:
    """Default `LevelSpec` of `level` ("bicubic", "weak", "standard" or "severe")."""
    try:
        return LEVEL_SPECS[Level(level)]
    except ValueError:
        names = ", ".join(lv.value for lv in Level)
        raise ValueError(f"unknown degradation level {level!r}; expected one of {names}") from None
