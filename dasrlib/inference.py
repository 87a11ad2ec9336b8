"""Super-resolve user images: tiled, precision-controlled, memory-bounded (Sec. 3.1, Sec. 4.6).

The DASR inference path ("only one adapted network per image", Sec. 3.1):

1. ``v_hat = P(lr)`` once for the whole image (`predict_vector`); a user-given ``v`` replaces it
   (the interactive SR of Sec. 4.6 / Fig. 5).
2. ``a = A(v_hat)`` and the experts are mixed once (Eq. 2): ``net = model.fuse(a)``, an ordinary
   expert network.
3. ``net`` runs over overlapping tiles; tile outputs are cross-faded with linear ramps and
   accumulated in a band of output rows that is written out (clamped, and quantised to
   uint8/uint16 when asked) as soon as no later tile touches it.

Plain SR networks (an `SRResNet`, any ``nn.Module`` mapping [1, 3, H, W] -> [1, 3, sH, sW], or a
spandrel ``ImageModelDescriptor``) skip steps 1-2.

Tiling geometry, in LR pixels along each axis. The image is cut into near-equal *cores* of at
most ``tile`` pixels. A tile reads its core plus ``BLEND_WIDTH / 2 + overlap`` pixels on each side
(clipped at the image border). Around every core boundary, neighbouring tiles are cross-faded over
a band ``BLEND_WIDTH`` pixels wide; outside the band each output pixel comes from one tile. So
every output pixel with a non-zero weight was computed from at least ``overlap`` pixels of real
image context on every side (or the image border, where the network pads exactly as it would
untiled). A network whose receptive-field radius is at most ``overlap`` therefore gives *the same
result tiled as untiled* (up to float rounding); with a larger receptive field the blend hides
the (small) differences. The 16-block SRResNet expert of DASR has a receptive-field radius of
``2 * num_block + 3 = 35`` LR pixels (tests/unit/test_inference.py measures it from gradients),
hence ``DEFAULT_OVERLAP = 35``: tiled DASR equals untiled DASR.

Memory: the GPU holds one tile's activations plus one band of accumulated output rows (about
``(tile + 2 * overlap + BLEND_WIDTH) * scale`` rows of the full output width, float32). The full
output lives on the CPU in the requested dtype, so an 8-bit result of a 2000x2000 input is one
uint8 array of 8000x8000x3 (192 MB), never a float32 copy (768 MB).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dasrlib.degradation import (
    SLOTS,
    Level,
    Slot,
    decode_vector,
    encode_physical,
    parameter_names,
)
from dasrlib.device import autocast_dtype, module_device, resolve_device
from dasrlib.io import UPSCALE_OUTPUT_TEXT, LoadedImage, read_image, write_png
from dasrlib.models.checkpoints import (
    import_official_dasr,
    load_model,
    load_third_party,
    read_metadata,
)

__all__ = [
    "BLEND_WIDTH",
    "DEFAULT_MODEL_RELATIVE_PATH",
    "DEFAULT_OVERLAP",
    "DEFAULT_TILE",
    "PARAMETER_ALIASES",
    "PREDICTOR_MAX_SIDE",
    "ModelNotFoundError",
    "UpscalePlan",
    "UpscaledImage",
    "default_model_path",
    "edit_vector",
    "expand_edits",
    "fig5_edits",
    "is_dasr",
    "load_sr_model",
    "parse_edits",
    "plan_upscale",
    "predict_vector",
    "upscale",
    "upscale_to_file",
]

logger = logging.getLogger(__name__)

DEFAULT_OVERLAP = 35
"""LR pixels of context every blended output pixel sees: the receptive-field radius of the
16-block SRResNet expert (2 * 16 + 3), so tiling does not change a DASR result."""

BLEND_WIDTH = 8
"""LR pixels over which two neighbouring tiles are cross-faded (linear ramps summing to one)."""

DEFAULT_TILE = 512
"""Tile core size (LR pixels) used by the CLI; `upscale` runs untiled unless given ``tile``."""

PREDICTOR_MAX_SIDE = 1024
"""Longest side (LR pixels) the predictor sees in one pass; larger images are split into crops."""

DEFAULT_MODEL_RELATIVE_PATH = Path("results/models/dasr/model.safetensors")
"""Where the project's trained DASR checkpoint is published (relative to the repository)."""

_GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma, as in dasrlib.io
_INTEGER_MAX = {torch.uint8: 255.0, torch.uint16: 65535.0}
_OUTPUT_DTYPES = (torch.float32, torch.uint8, torch.uint16)

SRNetwork = Callable[[Tensor], Tensor]


class ModelNotFoundError(FileNotFoundError):
    """No model was given and no trained checkpoint exists where the project publishes it."""


# --------------------------------------------------------------------------------------------
# Results and plans
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpscaledImage:
    """A super-resolved `LoadedImage`, ready for `dasrlib.io.write_png`.

    ``rgb``: [3, sH, sW] (or [1, sH, sW] when a gray input was kept gray) in the requested dtype:
    float32 in [0, 1], or uint8 / uint16 full-range integers. ``alpha``: [1, sH, sW] in the same
    dtype, or None. ``v``: the degradation vector used [v_dim] (predicted or given) and ``a`` the
    expert weights [N]; both None for a plain SR network.
    """

    rgb: Tensor
    alpha: Tensor | None
    bit_depth: int
    was_gray: bool
    path: Path | None
    v: Tensor | None
    a: Tensor | None


@dataclass(frozen=True)
class UpscalePlan:
    """What runs over the tiles: the (fused) network, its scale, and the v and a behind it."""

    network: SRNetwork
    scale: int
    v: Tensor | None
    a: Tensor | None


def is_dasr(model: object) -> bool:
    """True for a degradation-adaptive model (has ``predict_degradation``, ``expert_weights``,
    ``fuse``), False for a plain SR network."""
    return all(hasattr(model, name) for name in ("predict_degradation", "expert_weights", "fuse"))


# --------------------------------------------------------------------------------------------
# Devices, precision, model state
# --------------------------------------------------------------------------------------------


def _model_device(model: object) -> torch.device | None:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device  # spandrel ImageModelDescriptor
    if isinstance(model, nn.Module) and next(model.parameters(), None) is not None:
        return module_device(model)
    return None


def _pick_device(model: object, device: str | torch.device | None) -> torch.device:
    """The model's device; an explicit ``device`` must agree with it (models are not moved)."""
    current = _model_device(model)
    if device is None:
        return current if current is not None else torch.device("cpu")
    wanted = resolve_device(device)
    if current is not None and not _same_device(current, wanted):
        raise ValueError(
            f"the model is on {current} but device {wanted} was requested; "
            f"move it first (model.to({str(wanted)!r})) or pass device=None"
        )
    return wanted


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    index_a = torch.cuda.current_device() if a.index is None else a.index
    index_b = torch.cuda.current_device() if b.index is None else b.index
    return index_a == index_b


@contextlib.contextmanager
def _eval_mode(model: object) -> Iterator[None]:
    """Run ``model`` in eval mode and restore its training flag afterwards."""
    module = model if isinstance(model, nn.Module) else getattr(model, "model", None)
    if not isinstance(module, nn.Module) or not module.training:
        yield
        return
    module.eval()
    try:
        yield
    finally:
        module.train()


class _Precision:
    """Autocast for one precision mode, with the overflow fallback of issue 9.

    A reduced-precision (fp16 / bf16) output that holds NaN or Inf is recomputed in float32, and
    float32 is kept for the rest of the image; a warning names what overflowed.
    """

    def __init__(self, device: torch.device, precision: str) -> None:
        self.device = device
        self.precision = precision
        self.dtype = autocast_dtype(device, precision)

    def _context(self) -> contextlib.AbstractContextManager[object]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def run(self, fn: SRNetwork, x: Tensor, *, what: str) -> Tensor:
        """``fn(x)`` as float32, recomputed in float32 if the reduced precision overflowed."""
        with self._context():
            out = fn(x)
        out = out.float()
        # One float64 sum is non-finite exactly when an element is (a sum of finite float32
        # values cannot overflow float64): one pass instead of isfinite's three.
        if bool(torch.isfinite(out.sum(dtype=torch.float64))):
            return out
        if self.dtype is None:
            raise FloatingPointError(f"{what}: the network produced NaN/Inf in float32")
        logger.warning(
            "%s: %s output holds NaN/Inf (overflow); recomputing in float32 and keeping float32 "
            "for the rest of this image",
            what,
            self.precision,
        )
        self.dtype = None
        return self.run(fn, x, what=what)


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def _as_batch(image: Tensor) -> Tensor:
    """[3, H, W] / [1, 3, H, W] (or one gray channel) float in [0, 1] -> [1, 3, H, W] float32."""
    if not isinstance(image, Tensor):
        raise TypeError(f"expected a LoadedImage or a Tensor, got {type(image).__name__}")
    if not image.is_floating_point():
        raise TypeError(f"expected a float image in [0, 1], got dtype {image.dtype}")
    batch = image.unsqueeze(0) if image.ndim == 3 else image
    if batch.ndim != 4 or batch.shape[0] != 1 or batch.shape[1] not in (1, 3):
        raise ValueError(
            f"expected an image [3, H, W] or [1, 3, H, W] (or one gray channel), "
            f"got {tuple(image.shape)}"
        )
    if batch.shape[1] == 1:
        batch = batch.expand(1, 3, *batch.shape[2:])
    return batch.detach().float()


# --------------------------------------------------------------------------------------------
# Degradation prediction and mixing
# --------------------------------------------------------------------------------------------


def _even_cuts(length: int, parts: int) -> list[int]:
    """``parts + 1`` cut positions splitting ``length`` into near-equal parts."""
    return [round(index * length / parts) for index in range(parts + 1)]


@torch.no_grad()
def predict_vector(
    image: LoadedImage | Tensor,
    model: nn.Module,
    *,
    precision: str = "fp32",
    device: str | torch.device | None = None,
    predictor_max_side: int = PREDICTOR_MAX_SIDE,
) -> Tensor:
    """v_hat = P(lr) for one image (Sec. 3.1): float32 [v_dim] on the CPU, in [0, 1] units.

    P ends in global average pooling, so its output is a mean over image positions. An image
    whose longest side exceeds ``predictor_max_side`` is split into a grid of near-equal crops
    (each at most that size) and the per-crop vectors are averaged weighted by crop area: the
    same mean up to the crops' borders, in bounded memory. (Crops, not a downscaled view: a
    downscaled image has narrower blur and weaker noise, which would shift v_hat.)
    """
    if not is_dasr(model):
        raise TypeError(
            f"{type(model).__name__} has no degradation predictor (need predict_degradation, "
            "expert_weights and fuse, as dasrlib.models.DASR has)"
        )
    if predictor_max_side < 16:
        raise ValueError(f"predictor_max_side must be at least 16, got {predictor_max_side}")
    lr = _as_batch(image.rgb if isinstance(image, LoadedImage) else image)
    run_device = _pick_device(model, device)
    guard = _Precision(run_device, precision)
    height, width = lr.shape[-2:]
    rows = _even_cuts(height, math.ceil(height / predictor_max_side))
    cols = _even_cuts(width, math.ceil(width / predictor_max_side))
    total: Tensor | None = None
    with _eval_mode(model):
        for top, bottom in zip(rows[:-1], rows[1:], strict=True):
            for left, right in zip(cols[:-1], cols[1:], strict=True):
                crop = lr[..., top:bottom, left:right].to(run_device)
                v_crop = guard.run(model.predict_degradation, crop, what="degradation predictor")
                term = v_crop[0] * ((bottom - top) * (right - left))
                total = term if total is None else total + term
    assert total is not None
    return (total / (height * width)).cpu()


def _check_vector(v: Tensor) -> Tensor:
    if v.ndim == 2 and v.shape[0] == 1:
        v = v[0]
    if v.ndim != 1:
        raise ValueError(
            f"v must be one degradation vector [v_dim] or [1, v_dim], got {tuple(v.shape)}"
        )
    return v.detach().float()


def plan_upscale(
    lr: Tensor,
    model: nn.Module | SRNetwork,
    *,
    v: Tensor | None = None,
    precision: str = "auto",
    device: str | torch.device | None = None,
    predictor_max_side: int = PREDICTOR_MAX_SIDE,
) -> UpscalePlan:
    """Steps 1-2 of the inference path: predict (or take) v, compute a, fuse the experts once.

    For a plain SR network the plan is the network itself (``v`` must then be None).
    """
    run_device = _pick_device(model, device)
    if not is_dasr(model):
        if v is not None:
            raise ValueError(
                f"v was given but {type(model).__name__} is not degradation-adaptive (no predictor)"
            )
        return UpscalePlan(
            network=model, scale=_network_scale(model, lr, run_device), v=None, a=None
        )
    if v is None:
        v = predict_vector(
            lr,
            model,
            precision=precision,
            device=run_device,
            predictor_max_side=predictor_max_side,
        )
    v = _check_vector(v)
    with torch.no_grad(), _eval_mode(model):
        a = model.expert_weights(v.to(run_device)[None])[0]
        network: SRNetwork
        if getattr(model, "mixing", "weights") == "outputs":
            # Classical MoE (Fig. 4(d)) has no single fused network: all experts run per tile.
            def network(x: Tensor) -> Tensor:
                return model.super_resolve(x, a)
        else:
            network = model.fuse(a).eval()
    return UpscalePlan(network=network, scale=int(model.scale), v=v.cpu(), a=a.float().cpu())


def _network_scale(model: object, lr: Tensor, device: torch.device) -> int:
    """The network's scale factor: its ``scale`` attribute, else measured on a small crop."""
    scale = getattr(model, "scale", None)
    if isinstance(scale, int) and scale >= 1:
        return scale
    probe = lr[..., : min(32, lr.shape[-2]), : min(32, lr.shape[-1])].to(device)
    with torch.no_grad(), _eval_mode(model):
        out = model(probe)
    ratio_h, ratio_w = out.shape[-2] / probe.shape[-2], out.shape[-1] / probe.shape[-1]
    if ratio_h != ratio_w or ratio_h != int(ratio_h) or ratio_h < 1:
        raise ValueError(
            f"{type(model).__name__} mapped {tuple(probe.shape)} to {tuple(out.shape)}: "
            "not a whole-number super-resolution scale"
        )
    return int(ratio_h)


# --------------------------------------------------------------------------------------------
# Tiling
# --------------------------------------------------------------------------------------------


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
    cuts = _even_cuts(length, parts)
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


def _run_tiled(
    lr: Tensor,
    network: SRNetwork,
    *,
    scale: int,
    tile: int | None,
    overlap: int,
    out_channels: int,
    out_dtype: torch.dtype,
    guard: _Precision,
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


def _bicubic(scale: int) -> SRNetwork:
    def upsample(x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)

    return upsample


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def upscale(
    image: LoadedImage | Tensor,
    model: nn.Module | SRNetwork,
    *,
    tile: int | None = None,
    overlap: int = DEFAULT_OVERLAP,
    precision: str = "auto",
    v: Tensor | None = None,
    device: str | torch.device | None = None,
    predictor_max_side: int = PREDICTOR_MAX_SIDE,
    keep_gray: bool = False,
    output_dtype: torch.dtype = torch.float32,
) -> Tensor | UpscaledImage:
    """Super-resolve one image (Sec. 3.1 inference; Sec. 4.6 with a user-given ``v``).

    ``image``: a `LoadedImage` (returns an `UpscaledImage` keeping alpha, bit depth and
    gray-ness) or a float tensor [3, H, W] / [1, 3, H, W] in [0, 1] (returns a tensor of the same
    rank, [3, sH, sW] / [1, 3, sH, sW]). ``model``: DASR (P sees the whole image once, the experts
    are mixed once) or a plain SR network. ``tile``: core size in LR pixels (None: one pass);
    ``overlap``: context pixels per tile side (see the module docstring). ``precision``: "auto",
    "fp32", "tf32", "bf16" or "fp16" (`dasrlib.device.autocast_dtype`); reduced-precision
    overflow falls back to float32 with a warning. ``v``: [v_dim] replaces the predicted
    degradation vector. ``device``: None uses the model's device. ``keep_gray``: a gray input
    (`LoadedImage.was_gray` or a one-channel tensor) gives a one-channel BT.601 luma output.
    ``output_dtype``: float32 (clamped to [0, 1]), uint8 or uint16 (quantised tile by tile, so no
    float32 copy of the whole output exists). The alpha plane is upscaled bicubically, clamped.
    """
    if output_dtype not in _OUTPUT_DTYPES:
        raise ValueError(f"output_dtype must be one of {_OUTPUT_DTYPES}, got {output_dtype}")
    if tile is not None and tile < 1:
        raise ValueError(f"tile must be a positive number of LR pixels or None, got {tile}")
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    source = image if isinstance(image, LoadedImage) else None
    if source is not None:
        lr = _as_batch(source.rgb)
        gray = source.was_gray
    else:
        lr = _as_batch(image)
        gray = image.shape[-3] == 1
    run_device = _pick_device(model, device)
    plan = plan_upscale(
        lr,
        model,
        v=v,
        precision=precision,
        device=run_device,
        predictor_max_side=predictor_max_side,
    )
    guard = _Precision(run_device, precision)
    with torch.no_grad(), _eval_mode(model):
        rgb = _run_tiled(
            lr,
            plan.network,
            scale=plan.scale,
            tile=tile,
            overlap=overlap,
            out_channels=1 if keep_gray and gray else 3,
            out_dtype=output_dtype,
            guard=guard,
            what=_describe(source),
        )
        alpha = None
        if source is not None and source.alpha is not None:
            alpha = _run_tiled(
                _as_batch(source.alpha)[:, :1],
                _bicubic(plan.scale),
                scale=plan.scale,
                tile=tile,
                overlap=overlap,
                out_channels=1,
                out_dtype=output_dtype,
                guard=_Precision(run_device, "fp32"),
                what=f"{_describe(source)} (alpha)",
            )
    if source is None:
        return rgb.unsqueeze(0) if image.ndim == 4 else rgb
    return UpscaledImage(
        rgb=rgb,
        alpha=alpha,
        bit_depth=source.bit_depth,
        was_gray=source.was_gray,
        path=source.path,
        v=plan.v,
        a=plan.a,
    )


def _describe(source: LoadedImage | None) -> str:
    return "image" if source is None else str(source.path)


def upscale_to_file(
    source: LoadedImage | str | os.PathLike[str],
    model: nn.Module | SRNetwork,
    out_path: str | os.PathLike[str],
    *,
    tile: int | None = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    precision: str = "auto",
    v: Tensor | None = None,
    device: str | torch.device | None = None,
    predictor_max_side: int = PREDICTOR_MAX_SIDE,
    keep_gray: bool = False,
) -> UpscaledImage:
    """Read (if given a path), super-resolve and write a PNG atomically; return the result.

    The output is quantised tile by tile into a uint8 (8-bit input) or uint16 (16-bit input)
    array, which is what is written: memory stays at one integer copy of the output. Alpha is
    kept; a gray input is written gray when ``keep_gray``. Refuses to write onto the input file.
    """
    image = source if isinstance(source, LoadedImage) else read_image(source)
    out = Path(out_path)
    if out.exists() and image.path.exists() and out.resolve() == image.path.resolve():
        raise ValueError(f"refusing to overwrite the input image {str(image.path)!r}")
    result = upscale(
        image,
        model,
        tile=tile,
        overlap=overlap,
        precision=precision,
        v=v,
        device=device,
        predictor_max_side=predictor_max_side,
        keep_gray=keep_gray,
        output_dtype=torch.uint16 if image.bit_depth == 16 else torch.uint8,
    )
    assert isinstance(result, UpscaledImage)
    write_png(
        out,
        result.rgb,
        alpha=result.alpha,
        bit_depth=result.bit_depth,
        gray=result.rgb.shape[0] == 1,
        text=UPSCALE_OUTPUT_TEXT,
    )
    return result


# --------------------------------------------------------------------------------------------
# Which model
# --------------------------------------------------------------------------------------------


def _repository_root() -> Path:
    return Path(__file__).resolve().parent.parent


def default_model_path() -> Path:
    """The project's trained DASR checkpoint (``results/models/dasr/model.safetensors``).

    Looked for under the repository this package lives in, then under the current directory.
    Raises `ModelNotFoundError` naming where it looked and how to get a model.
    """
    candidates = [_repository_root() / DEFAULT_MODEL_RELATIVE_PATH]
    cwd_candidate = Path.cwd() / DEFAULT_MODEL_RELATIVE_PATH
    if cwd_candidate.resolve() != candidates[0].resolve():
        candidates.append(cwd_candidate)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise ModelNotFoundError(
        f"no DASR model given and no trained checkpoint found (looked for {looked}). Get one by "
        "(1) training it with the library (notebooks/train.ipynb; the published checkpoint lands "
        f"in {DEFAULT_MODEL_RELATIVE_PATH}), (2) passing a checkpoint of this project "
        "(--model PATH / model_path=...), or (3) passing the official DASR release files "
        "net_g and net_p (--official NET_G NET_P / official_paths=(...)), downloaded from the "
        "authors' repository (github.com/csjliang/DASR) on a machine with network access."
    )


def load_sr_model(
    model_path: str | os.PathLike[str] | None = None,
    *,
    official_paths: tuple[str | os.PathLike[str], str | os.PathLike[str]] | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """The model to super-resolve with, on ``device``, in eval mode.

    ``model_path``: a checkpoint of this project (safetensors written by
    `dasrlib.models.save_weights`, rebuilt from its recorded architecture), or any other SR
    checkpoint spandrel recognises (ESRGAN, Real-ESRGAN, SwinIR, ...). ``official_paths``: the
    official DASR release files (net_g, net_p). Neither: the project's trained checkpoint
    (`default_model_path`), else `ModelNotFoundError` saying how to get one.
    """
    target = resolve_device(device)
    if model_path is not None and official_paths is not None:
        raise ValueError("give either model_path or official_paths, not both")
    if official_paths is not None:
        net_g, net_p = official_paths
        return import_official_dasr(net_g, net_p).to(target).eval()
    path = Path(model_path) if model_path is not None else default_model_path()
    if path.suffix == ".safetensors" and read_metadata(path)["architecture"] is not None:
        return load_model(path, target)
    return load_third_party(path, scale=None).to(target).eval()


# --------------------------------------------------------------------------------------------
# Editing the degradation vector by its physical meaning (Sec. 4.6, Fig. 5)
# --------------------------------------------------------------------------------------------

PARAMETER_ALIASES: dict[str, tuple[str, ...]] = {
    "blur_sigma": ("blur1_sigma_x", "blur1_sigma_y"),
    "blur_size": ("blur1_kernel_size",),
    "blur_kernel_size": ("blur1_kernel_size",),
    "blur_rotation": ("blur1_rotation",),
    "noise_level": ("noise1_level",),
    "noise_type": ("noise1_type",),
    "noise_gray": ("noise1_gray",),
    "jpeg_quality": ("jpeg1_quality",),
    "resize_scale": ("resize1_scale",),
    "resize_mode": ("resize1_mode",),
}
"""Short names for the parameters of the first degradation stage (``blur_sigma`` sets both
sigmas of the first blur). Every name of `dasrlib.degradation.parameter_names` works too."""

_SLOTS_OF: dict[str, tuple[int, ...]] = {
    name: tuple(slot.index for slot in SLOTS if slot.parameter == name)
    for name in parameter_names()
}


def valid_parameter_names() -> str:
    """One line listing the editable names and the aliases, for error and help messages."""
    aliases = ", ".join(f"{a} -> {'+'.join(t)}" for a, t in PARAMETER_ALIASES.items())
    return f"parameters: {', '.join(parameter_names())}; aliases: {aliases}"


def expand_edits(edits: dict[str, float | str]) -> dict[str, float | str]:
    """Aliases resolved to parameter names; an unknown name raises, listing the valid ones."""
    expanded: dict[str, float | str] = {}
    for name, value in edits.items():
        targets = PARAMETER_ALIASES.get(name, (name,))
        for target in targets:
            if target not in _SLOTS_OF:
                raise ValueError(
                    f"unknown degradation parameter {name!r}; {valid_parameter_names()}"
                )
            expanded[target] = value
    return expanded


def parse_edits(items: Sequence[str]) -> dict[str, float | str]:
    """``["blur_sigma=1.2", "noise1_type=gaussian"]`` -> edits for `edit_vector` (names checked)."""
    edits: dict[str, float | str] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.strip() or not text.strip():
            raise ValueError(f"{item!r}: expected NAME=VALUE, e.g. blur_sigma=1.2")
        try:
            value: float | str = float(text)
        except ValueError:
            value = text.strip()
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{item!r}: the value must be a finite number")
        edits[name.strip()] = value
    expand_edits(edits)  # unknown names fail here, before any image is processed
    return edits


def edit_vector(
    v: Tensor, edits: dict[str, float | str], *, level: Level | str = Level.SEVERE
) -> Tensor:
    """v [v_dim] with the slots of the edited physical parameters replaced (Sec. 4.6).

    ``edits`` maps parameter names (or `PARAMETER_ALIASES`) to physical values: sigma in pixels,
    rotation in radians, noise sigma in 0-255 (Poisson: scale), JPEG quality, resize scale; one-hot
    parameters take an option name (``noise1_type="poisson"``) or ``"none"``. Slots of parameters
    not edited keep their exact values, so no edit gives v back. Physical values map to [0, 1]
    with ``level``'s ranges (`dasrlib.degradation.encode_physical`); a noise level is encoded
    with the range of its noise type (the edited one, else the one v says).
    """
    edits = expand_edits(edits)
    v = _check_vector(v).cpu()
    out = v.clone()
    decoded = decode_vector(v, level=level)
    assert isinstance(decoded, dict)
    for name, value in edits.items():
        context: dict[str, float | str | None] = {name: value}
        if name.endswith("_level"):
            type_name = name.replace("_level", "_type")
            context[type_name] = edits.get(type_name, decoded.get(type_name))
        encoded = encode_physical(context, level=level)
        for index in _SLOTS_OF[name]:
            out[index] = encoded[index]
            if SLOTS[index].kind == "continuous" and not 0.0 <= float(encoded[index]) <= 1.0:
                noise_type = context.get(name.replace("_level", "_type"))
                logger.warning(
                    "%s=%s lies outside the %s range of this parameter%s (normalised value %.3g); "
                    "the model never saw such a value in training",
                    name,
                    value,
                    Level(level).value,
                    f" for {noise_type} noise" if name.endswith("_level") else "",
                    float(encoded[index]),
                )
    return out


def _slot_named(name: str) -> Slot:
    return next(slot for slot in SLOTS if slot.name == name)


def fig5_edits(
    v: Tensor, *, level: Level | str = Level.SEVERE
) -> dict[str, dict[str, float | str]]:
    """The four hand edits of Fig. 5 (Sec. 4.6): {panel title: `edit_vector` edits}, in the
    order blur up, blur down, noise up, noise down.

    Blur scale up / down: both sigmas of the first blur set to the top / bottom of ``level``'s
    sigma range. Noise level up / down: the first noise level set to the top / bottom of the
    range of the noise type v predicts (Gaussian when v predicts none, which is then set too).
    """
    level = Level(level)
    decoded = decode_vector(_check_vector(v).cpu(), level=level)
    assert isinstance(decoded, dict)
    sigma_lo, sigma_hi = _slot_named("blur1_sigma_x").ranges[level]
    noise_slot = _slot_named("noise1_level")
    noise_type = decoded.get("noise1_type", "none")
    noise_lo, noise_hi = (
        noise_slot.poisson_ranges[level] if noise_type == "poisson" else noise_slot.ranges[level]
    )
    type_edit: dict[str, float | str] = {"noise1_type": "gaussian"} if noise_type == "none" else {}
    noise_name = "poisson scale" if noise_type == "poisson" else "gaussian sigma"
    return {
        f"blur scale up: sigma {sigma_hi:g} px": {
            "blur1_sigma_x": sigma_hi,
            "blur1_sigma_y": sigma_hi,
        },
        f"blur scale down: sigma {sigma_lo:g} px": {
            "blur1_sigma_x": sigma_lo,
            "blur1_sigma_y": sigma_lo,
        },
        f"noise level up: {noise_name} {noise_hi:g}": {"noise1_level": noise_hi, **type_edit},
        f"noise level down: {noise_name} {noise_lo:g}": {"noise1_level": noise_lo, **type_edit},
    }
