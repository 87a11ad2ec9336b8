"""`degrade`: one function that walks the stages of any level (Sec. 3.2, Fig. 2).

For each stage in order: blur, resize, noise, JPEG (each optional); then the final step: resize to
HR / scale with a per-sample mode, plus the optional sinc filter and JPEG in a per-sample random
order. The LR batch is clamped and rounded to 8-bit levels at the end.

Randomness: every draw comes from the explicit `generator`, scalar parameters on the generator's
device, in a fixed order that does not depend on the image content, so the same seed gives the same
output on the same device. Parameters are drawn per sample wherever the tensor shape allows; the
resize scales (shape-changing) are one draw per batch.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor

from .kernels import filter2d, gaussian_kernels, sinc_kernels
from .levels import (
    RESIZE_MODES,
    BlurSpec,
    FinalSpec,
    JpegSpec,
    Level,
    LevelSpec,
    NoiseSpec,
    ResizeSpec,
    SincSpec,
    StageSpec,
    level_spec,
)
from .ops import gaussian_noise, jpeg_compress, poisson_noise, quantize_8bit, resize_per_sample
from .record import (
    BlurRecord,
    DegradationRecord,
    FinalRecord,
    JpegRecord,
    NoiseRecord,
    ResizeRecord,
    SincRecord,
    StageRecord,
)

__all__ = ["degrade"]

_DIRECTIONS = ("up", "down", "keep")


# ----------------------------------------------------------------------------- draws


def _rand(g: torch.Generator, n: int) -> Tensor:
    return torch.rand(n, generator=g, device=g.device)


@functools.lru_cache(maxsize=128)
def _affine(bounds: tuple[tuple[float, float], ...], device: torch.device) -> tuple[Tensor, Tensor]:
    lo = torch.tensor([b[0] for b in bounds], dtype=torch.float32, device=device)
    hi = torch.tensor([b[1] for b in bounds], dtype=torch.float32, device=device)
    return lo, hi - lo


def _draws(g: torch.Generator, n: int, bounds: Sequence[Sequence[float]]) -> Tensor:
    """[n, k] uniform draws, column j in bounds[j], from one call of the generator."""
    lo, width = _affine(tuple((float(a), float(b)) for a, b in bounds), g.device)
    return torch.addcmul(lo, torch.rand(n, len(bounds), generator=g, device=g.device), width)


def _size_steps(bounds: tuple[int, int]) -> int:
    """Number of odd sizes in [lo, hi] (both odd)."""
    lo, hi = bounds
    if lo % 2 == 0 or hi % 2 == 0 or lo > hi:
        raise ValueError(f"kernel size range {bounds} must hold odd integers lo <= hi")
    return (hi - lo) // 2 + 1


def _odd_size(steps: Tensor, lo: int) -> Tensor:
    """Odd kernel sizes lo, lo + 2, ... from uniform draws in [0, number of sizes)."""
    return (steps.floor() * 2 + lo).long()


def _categorical(g: torch.Generator, n: int, probs: Sequence[float]) -> Tensor:
    """[n] indices drawn with (unnormalised) `probs`, by thresholding one uniform draw each."""
    if min(probs) < 0 or sum(probs) <= 0:
        raise ValueError(f"invalid probabilities {tuple(probs)}")
    u = _rand(g, n) * float(sum(probs))
    index = torch.zeros(n, dtype=torch.long, device=g.device)
    edge = 0.0
    for p in probs[:-1]:
        edge += float(p)
        index += (u >= edge).long()
    return index


def _modes(g: torch.Generator, n: int, names: Sequence[str]) -> Tensor:
    """[n] indices into RESIZE_MODES, uniform over `names`."""
    unknown = [m for m in names if m not in RESIZE_MODES]
    if unknown:
        raise ValueError(f"unknown resize modes {unknown}; expected some of {RESIZE_MODES}")
    choice = torch.randint(len(names), (n,), generator=g, device=g.device)
    if tuple(names) == RESIZE_MODES:
        return choice
    mode = torch.full_like(choice, RESIZE_MODES.index(names[0]))
    for j, name in enumerate(names[1:], start=1):
        mode = torch.where(choice == j, RESIZE_MODES.index(name), mode)
    return mode


# ----------------------------------------------------------------------------- application
#
# Operations run on the whole batch and per-sample choices are made with `torch.where`, so no step
# waits for the device to report which samples drew what (a GPU keeps working while Python queues
# the next kernels). Skipped blurs and sinc filters use an identity kernel.


def _select(mask: Tensor, when_true: Tensor, when_false: Tensor) -> Tensor:
    """Per-sample choice between two [B, ...] tensors by a [B] bool mask."""
    return torch.where(mask.view(-1, *([1] * (when_true.ndim - 1))), when_true, when_false)


@functools.lru_cache(maxsize=16)
def _identity_kernel(size: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """[size, size] delta kernel, built once per size, dtype and device (read only)."""
    delta = torch.zeros(size, size, dtype=dtype, device=device)
    delta[size // 2, size // 2] = 1.0
    return delta


def _blur(x: Tensor, spec: BlurSpec, g: torch.Generator) -> tuple[Tensor, BlurRecord]:
    n = x.shape[0]
    steps = _size_steps(spec.kernel_size)
    d = _draws(g, n, [(0, 1), (0, 1), (0, steps), spec.sigma, spec.sigma, spec.rotation])
    applied = d[:, 0] < spec.prob
    isotropic = d[:, 1] < spec.iso_prob
    kernel_size = _odd_size(d[:, 2], spec.kernel_size[0])
    sigma_x = d[:, 3]
    sigma_y = torch.where(isotropic, sigma_x, d[:, 4])
    rotation = torch.where(isotropic, torch.zeros_like(sigma_x), d[:, 5])
    record = BlurRecord(
        *(t.to(x.device) for t in (applied, isotropic, kernel_size, sigma_x, sigma_y, rotation))
    )
    size = spec.kernel_size[1]
    kernels = gaussian_kernels(
        record.kernel_size, record.sigma_x, record.sigma_y, record.rotation, size=size
    )
    kernels = _select(
        record.applied, kernels, _identity_kernel(size, kernels.dtype, kernels.device)
    )
    return filter2d(x, kernels), record


def _resize(
    x: Tensor, spec: ResizeSpec, g: torch.Generator, target: tuple[int, int]
) -> tuple[Tensor, ResizeRecord]:
    n = x.shape[0]
    # The output shape must be known on the host: the one device sync of a resize stage.
    direction_index, u = torch.cat([_categorical(g, 1, spec.probs).float(), _rand(g, 1)]).tolist()
    direction = _DIRECTIONS[int(direction_index)]
    lo, hi = spec.scale
    scale = {"up": 1.0 + u * (hi - 1.0), "down": lo + u * (1.0 - lo), "keep": 1.0}[direction]
    mode = _modes(g, n, spec.modes).to(x.device)
    if spec.relative_to == "input":
        base = (x.shape[-2], x.shape[-1])
    elif spec.relative_to == "target":
        base = target
    else:
        raise ValueError(f"ResizeSpec.relative_to={spec.relative_to!r}; expected input or target")
    size = (max(1, int(base[0] * scale)), max(1, int(base[1] * scale)))
    resized = resize_per_sample(x, size, mode, candidates=_mode_indices(spec.modes))
    return resized, ResizeRecord(direction, scale, size, mode)


def _mode_indices(names: Sequence[str]) -> tuple[int, ...]:
    return tuple(RESIZE_MODES.index(m) for m in names)


def _noise(x: Tensor, spec: NoiseSpec, g: torch.Generator) -> tuple[Tensor, NoiseRecord]:
    n = x.shape[0]
    d = _draws(g, n, [(0, 1), (0, 1), spec.gaussian_sigma, spec.poisson_scale, (0, 1)])
    applied = d[:, 0] < spec.prob
    poisson = d[:, 1] >= spec.gaussian_prob
    gray = d[:, 4] < spec.gray_prob
    level = torch.where(poisson, d[:, 3], d[:, 2])
    record = NoiseRecord(*(t.to(x.device) for t in (applied, poisson, level, gray)))
    # Both noises are drawn for every sample (cheap on a GPU); each sample keeps its own type.
    noise = _select(
        record.poisson,
        poisson_noise(x, record.level, record.gray, generator=g),
        gaussian_noise(x, record.level, record.gray, generator=g),
    )
    return _select(record.applied, (x + noise).clamp(0.0, 1.0), x), record


def _draw_jpeg(spec: JpegSpec, g: torch.Generator, n: int, device: torch.device) -> JpegRecord:
    d = _draws(g, n, [(0, 1), spec.quality])
    return JpegRecord((d[:, 0] < spec.prob).to(device), d[:, 1].to(device))


def _jpeg(x: Tensor, record: JpegRecord) -> Tensor:
    """JPEG on the samples whose record says applied; the others are returned unchanged."""
    return _select(record.applied, jpeg_compress(x, record.quality), x)


def _draw_sinc(spec: SincSpec, g: torch.Generator, n: int, device: torch.device) -> SincRecord:
    d = _draws(g, n, [(0, 1), (0, _size_steps(spec.kernel_size)), spec.omega_c])
    applied = d[:, 0] < spec.prob
    kernel_size = _odd_size(d[:, 1], spec.kernel_size[0])
    return SincRecord(applied.to(device), kernel_size.to(device), d[:, 2].to(device))


def _sinc(x: Tensor, record: SincRecord, size: int) -> Tensor:
    kernels = sinc_kernels(record.kernel_size, record.omega_c, size=size)
    kernels = _select(
        record.applied, kernels, _identity_kernel(size, kernels.dtype, kernels.device)
    )
    return filter2d(x, kernels)


def _stage(
    x: Tensor, spec: StageSpec, g: torch.Generator, target: tuple[int, int]
) -> tuple[Tensor, StageRecord]:
    blur = resize = noise = jpeg = None
    if spec.blur is not None:
        x, blur = _blur(x, spec.blur, g)
    if spec.resize is not None:
        x, resize = _resize(x, spec.resize, g, target)
    if spec.noise is not None:
        x, noise = _noise(x, spec.noise, g)
    if spec.jpeg is not None:
        jpeg = _draw_jpeg(spec.jpeg, g, x.shape[0], x.device)
        x = _jpeg(x, jpeg)
    return x, StageRecord(blur, resize, noise, jpeg)


def _final(
    x: Tensor, spec: FinalSpec, g: torch.Generator, target: tuple[int, int]
) -> tuple[Tensor, FinalRecord]:
    n = x.shape[0]
    mode = _modes(g, n, spec.modes).to(x.device)
    sinc = None if spec.sinc is None else _draw_sinc(spec.sinc, g, n, x.device)
    jpeg = None if spec.jpeg is None else _draw_jpeg(spec.jpeg, g, n, x.device)
    sinc_first = None
    if sinc is not None and jpeg is not None:
        sinc_first = (_rand(g, n) < spec.sinc_first_prob).to(x.device)
    if jpeg is not None and sinc_first is not None:
        # "JPEG then [resize + sinc]" samples are coded before the resize; the others keep x.
        x = _select(~sinc_first, _jpeg(x, jpeg), x)
    x = resize_per_sample(
        x, target, mode, antialias=spec.antialias, candidates=_mode_indices(spec.modes)
    )
    if sinc is not None and spec.sinc is not None:
        x = _sinc(x, sinc, spec.sinc.kernel_size[1])
    if jpeg is not None:
        coded = _jpeg(x, jpeg)
        x = coded if sinc_first is None else _select(sinc_first, coded, x)
    return x, FinalRecord(mode, spec.antialias, sinc, jpeg, sinc_first)


# ----------------------------------------------------------------------------- entry point


@torch.no_grad()
def degrade(
    hr: Tensor,
    level: Level | str,
    *,
    generator: torch.Generator,
    scale: int = 4,
    spec: LevelSpec | None = None,
) -> tuple[Tensor, DegradationRecord]:
    """Synthesise a low-resolution batch from `hr` at `level` (Sec. 3.2).

    Args:
        hr: [B, 3, H, W] float in [0, 1] on any device; H and W divisible by `scale`.
        level: "bicubic", "weak", "standard" or "severe".
        generator: every random draw comes from it; put it on `hr`'s device for speed.
        scale: down-sampling factor of the final resize.
        spec: a `LevelSpec` replacing the level's default (e.g. probabilities forced to 0 or 1
            with `dataclasses.replace`); its `level` must be `level`.

    Returns:
        lr: [B, 3, H / scale, W / scale], clamped to [0, 1] and rounded to 8-bit levels.
        record: the drawn parameters; `record.vector()` is the 33-slot target v.
    """
    level = Level(level)
    spec = level_spec(level) if spec is None else spec
    if spec.level is not level:
        raise ValueError(f"spec is for level {spec.level.value!r}, not {level.value!r}")
    if hr.ndim != 4 or hr.shape[1] != 3 or not hr.is_floating_point():
        raise ValueError(
            f"hr must be a float [B, 3, H, W] tensor, got {hr.dtype} {tuple(hr.shape)}"
        )
    height, width = hr.shape[-2:]
    if scale < 1 or height % scale or width % scale:
        raise ValueError(f"HR size {height}x{width} is not divisible by scale {scale}")
    target = (height // scale, width // scale)

    x = hr
    stages = []
    for stage_spec in spec.stages:
        x, stage_record = _stage(x, stage_spec, generator, target)
        stages.append(stage_record)
    x, final = _final(x, spec.final, generator, target)
    lr = quantize_8bit(x)
    record = DegradationRecord(level, hr.shape[0], tuple(stages), final)
    return lr, record
