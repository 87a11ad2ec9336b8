"""The tiling engine of `dasrlib.inference.upscale`: overlapping tiles, linear cross-fades,
banded accumulation, tile-by-tile quantisation, and the reduced-precision overflow guard.

Geometry, in LR pixels along each axis. The image is cut into near-equal *cores* of at most
``tile`` pixels. A tile reads its core plus ``BLEND_WIDTH / 2 + overlap`` pixels on each side
(clipped at the image border). Around every core boundary, neighbouring tiles are cross-faded over
a band ``BLEND_WIDTH`` pixels wide; outside the band each output pixel comes from one tile. So
every output pixel with a non-zero weight was computed from at least ``overlap`` pixels of real
image context on every side (or the image border). A network whose receptive-field radius is at
most ``overlap`` therefore gives the same result tiled as untiled (up to float rounding); the
16-block SRResNet expert of DASR has radius ``2 * num_block + 3 = 35``, hence `DEFAULT_OVERLAP`.

Memory: the compute device holds one tile's activations plus one band of accumulated output rows;
the full output lives on the CPU in the requested dtype (uint8 / uint16 / float32).

Precision and layout: `dasrlib.device.PrecisionGuard` runs each tile under autocast
(`dasrlib.device.autocast_dtype`) and, when asked, hands the network channels-last tiles (the
layout oneDNN's bf16 convolutions run fastest in; `dasrlib.inference` decides).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from dasrlib.device import PrecisionGuard

__all__ = [
    "BLEND_WIDTH",
    "DEFAULT_OVERLAP",
    "OUTPUT_DTYPES",
    "SRNetwork",
    "TileMemoryError",
    "available_memory_bytes",
    "check_tile_memory",
    "estimate_tile_bytes",
    "even_cuts",
    "largest_tile_read",
    "run_tiled",
]

logger = logging.getLogger(__name__)

DEFAULT_OVERLAP = 35
"""LR pixels of context every blended output pixel sees: the receptive-field radius of the
16-block SRResNet expert (2 * 16 + 3), so tiling does not change a DASR result."""

BLEND_WIDTH = 8
"""LR pixels over which two neighbouring tiles are cross-faded (linear ramps summing to one)."""

OUTPUT_DTYPES = (torch.float32, torch.uint8, torch.uint16)
"""Output dtypes: float32 in [0, 1], or full-range integers quantised tile by tile."""

_GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma, as in dasrlib.io
_INTEGER_MAX = {torch.uint8: 255.0, torch.uint16: 65535.0}

SRNetwork = Callable[[Tensor], Tensor]


class TileMemoryError(MemoryError):
    """One tile (or the whole image, untiled) would need more memory than the device has."""


def estimate_tile_bytes(height: int, width: int, *, scale: int, feature_channels: int) -> int:
    """A conservative bound on the bytes one network pass over ``height x width`` LR pixels needs.

    The largest activations of an SRResNet / EDSR style network are at the output resolution
    (``sH x sW``): the last upsampling convolution's input and output, the pixel-shuffle copy and
    the next convolution's output, each ``feature_channels`` planes or a quarter of that. Counted
    as four such feature maps in float32 (whatever the autocast dtype), plus the input, the output
    image and one output-sized accumulation band. Measured on the CPU in float32 (64 features,
    x4, 120-240 pixel squares): the peak grows by 11.7 kB per LR pixel; this bound says 16.8 kB.
    """
    out_pixels = scale * scale * height * width
    elements = 4 * feature_channels * out_pixels + 3 * height * width + 2 * 3 * out_pixels
    return 4 * elements


def available_memory_bytes(device: torch.device) -> int | None:
    """Free memory on `device` in bytes (CUDA: free plus cached; CPU: available RAM), or None."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type != "cpu":
        return None
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def largest_tile_read(length: int, *, tile: int | None, overlap: int) -> int:
    """The most LR pixels one tile reads along an axis of `length` (core plus both margins)."""
    if tile is None or tile >= length:
        return length
    core = math.ceil(length / max(1, math.ceil(length / tile)))
    return min(length, core + 2 * (overlap + math.ceil(BLEND_WIDTH / 2)))


def check_tile_memory(
    height: int,
    width: int,
    *,
    tile: int | None,
    overlap: int,
    scale: int,
    feature_channels: int,
    device: torch.device,
    what: str,
) -> None:
    """Raise `TileMemoryError` before any pixel is computed when one tile would not fit.

    The bound is `estimate_tile_bytes` of the largest tile against `available_memory_bytes`;
    the message suggests a tile size that fits. Nothing is checked where the free memory is
    unknown.
    """
    tile_h = largest_tile_read(height, tile=tile, overlap=overlap)
    tile_w = largest_tile_read(width, tile=tile, overlap=overlap)
    needed = estimate_tile_bytes(tile_h, tile_w, scale=scale, feature_channels=feature_channels)
    free = available_memory_bytes(device)
    if free is None or needed <= free:
        return
    per_pixel = estimate_tile_bytes(1, 1, scale=scale, feature_channels=feature_channels)
    side = math.isqrt(max(1, free // 2 // per_pixel))  # a tile that fits in half of what is free
    suggestion = max(16, (side - 2 * (overlap + BLEND_WIDTH)) // 16 * 16)
    how = "untiled" if tile is None else f"with tile {tile}"
    raise TileMemoryError(
        f"{what}: a pass over {tile_w}x{tile_h} LR pixels ({how}, x{scale}, {feature_channels} "
        f"feature channels) needs about {needed / 1e9:.1f} GB but {free / 1e9:.1f} GB is free on "
        f"{device}; use tiles, e.g. --tile {suggestion} (tile={suggestion})"
    )


def even_cuts(length: int, parts: int) -> list[int]:
    """``parts + 1`` cut positions splitting ``length`` into near-equal parts."""
    return [round(index * length / parts) for index in range(parts + 1)]


@dataclass(frozen=True)
class _Span:
    """One tile along one axis: LR pixels [read_start, read_stop) are fed to the network; its
    output weights cover output pixels [start, stop) (``weights`` holds them, normalised)."""

    read_start: int
    read_stop: int
    start: int
    stop: int
    weights: Tensor  # [stop - start] float32


def _spans(length: int, *, tile: int | None, overlap: int, scale: int) -> list[_Span]:
    """Tiles along one axis and their normalised cross-fade weights (see the module docstring)."""
    parts = 1 if tile is None else max(1, math.ceil(length / tile))
    cuts = even_cuts(length, parts)
    margin = overlap + math.ceil(BLEND_WIDTH / 2)
    half_band = scale * BLEND_WIDTH / 2  # output pixels on each side of a core boundary
    centres = torch.arange(scale * length, dtype=torch.float64) + 0.5
    raw = []
    for core_start, core_stop in zip(cuts[:-1], cuts[1:], strict=True):
        weight = torch.ones_like(centres)
        if core_start > 0:
            rise = (centres - (scale * core_start - half_band)) / (2 * half_band)
            weight = weight * rise.clamp(0.0, 1.0)
        if core_stop < length:
            fall = ((scale * core_stop + half_band) - centres) / (2 * half_band)
            weight = weight * fall.clamp(0.0, 1.0)
        raw.append((core_start, core_stop, weight))
    total = torch.stack([weight for _, _, weight in raw]).sum(dim=0)
    spans = []
    for core_start, core_stop, weight in raw:
        nonzero = torch.nonzero(weight > 0).flatten()
        start, stop = int(nonzero[0]), int(nonzero[-1]) + 1
        spans.append(
            _Span(
                read_start=max(0, core_start - margin),
                read_stop=min(length, core_stop + margin),
                start=start,
                stop=stop,
                weights=(weight[start:stop] / total[start:stop]).float(),
            )
        )
    return spans


def _finalise(rows: Tensor, dtype: torch.dtype) -> Tensor:
    """Accumulated float rows -> clamped CPU rows in ``dtype`` (integers: full range, rounded)."""
    rows = rows.clamp(0.0, 1.0)
    if dtype == torch.float32:
        return rows.cpu()
    scaled = rows.mul(_INTEGER_MAX[dtype]).round_()
    if dtype == torch.uint8:
        return scaled.to(torch.uint8).cpu()
    return scaled.to(torch.int32).cpu().to(torch.uint16)  # few uint16 ops exist on CUDA


def _to_gray(image: Tensor) -> Tensor:
    weights = torch.tensor(_GRAY_WEIGHTS, dtype=image.dtype, device=image.device)
    return (image * weights.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)


def _checked(sr: Tensor, piece: Tensor, scale: int, what: str) -> Tensor:
    """``sr`` if it is ``piece`` upscaled by ``scale``; else a ValueError naming both shapes."""
    if sr.shape[:2] != piece.shape[:2] or sr.shape[-2:] != (
        scale * piece.shape[-2],
        scale * piece.shape[-1],
    ):
        raise ValueError(
            f"{what}: network mapped {tuple(piece.shape)} to {tuple(sr.shape)}, "
            f"expected scale {scale}"
        )
    return sr


def run_tiled(
    lr: Tensor,
    network: SRNetwork,
    *,
    scale: int,
    tile: int | None,
    overlap: int,
    out_channels: int,
    out_dtype: torch.dtype,
    guard: PrecisionGuard,
    what: str,
) -> Tensor:
    """Run ``network`` over tiles of ``lr`` [1, C, H, W]; return [out_channels, sH, sW] on the CPU.

    Tile rows are processed top to bottom; each tile's output, times its weights, is added to a
    float32 band of output rows on the compute device, and rows that no later tile touches are
    finalised into the CPU output (clamped, quantised for integer dtypes).
    """
    height, width = lr.shape[-2:]
    rows = _spans(height, tile=tile, overlap=overlap, scale=scale)
    cols = _spans(width, tile=tile, overlap=overlap, scale=scale)
    device = guard.device
    if len(rows) == 1 and len(cols) == 1:  # one tile, all weights 1: no band to accumulate
        sr = _checked(guard.run(network, lr.to(device), what=what), lr, scale, what)
        single = _to_gray(sr)[0] if out_channels == 1 and sr.shape[1] == 3 else sr[0]
        return _finalise(single.contiguous(), out_dtype)
    out = torch.empty((out_channels, scale * height, scale * width), dtype=out_dtype)
    band: Tensor | None = None
    band_start = 0  # output row of band[:, 0]
    col_weights = [span.weights.to(device) for span in cols]
    for row_index, row in enumerate(rows):
        needed = row.stop - band_start
        fresh_rows = needed if band is None else needed - band.shape[1]
        fresh = torch.zeros((out_channels, fresh_rows, scale * width), device=device)
        band = fresh if band is None else torch.cat([band, fresh], dim=1)
        row_weights = row.weights.to(device)
        for col, col_weight in zip(cols, col_weights, strict=True):
            piece = lr[..., row.read_start : row.read_stop, col.read_start : col.read_stop]
            sr = _checked(guard.run(network, piece.to(device), what=what), piece, scale, what)
            if out_channels == 1 and sr.shape[1] == 3:
                sr = _to_gray(sr)
            top = row.start - scale * row.read_start
            left = col.start - scale * col.read_start
            sr = sr[0, :, top : top + row.stop - row.start, left : left + col.stop - col.start]
            weight = row_weights[:, None] * col_weight[None, :]
            band[:, row.start - band_start : row.stop - band_start, col.start : col.stop] += (
                sr * weight
            )
            del sr
        done = rows[row_index + 1].start if row_index + 1 < len(rows) else scale * height
        out[:, band_start:done] = _finalise(band[:, : done - band_start], out_dtype)
        band = band[:, done - band_start :].clone()
        band_start = done
    return out
