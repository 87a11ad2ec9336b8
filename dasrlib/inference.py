"""Super-resolve user images: tiled, precision-controlled, memory-bounded (Sec. 3.1, Sec. 4.6).

The DASR inference path ("only one adapted network per image", Sec. 3.1):

1. ``v_hat = P(lr)`` once for the whole image (`predict_vector`); a user-given ``v`` replaces it
   (the interactive SR of Sec. 4.6 / Fig. 5).
2. ``a = A(v_hat)`` and the experts are mixed once (Eq. 2): ``net = model.fuse(a)``, an ordinary
   expert network.
3. ``net`` runs over overlapping tiles; tile outputs are cross-faded with linear ramps and
   accumulated in a band of output rows that is written out (clamped, and quantised to
   uint8/uint16 when asked) as soon as no later tile touches it.

Precision: every step runs under autocast in the dtype `dasrlib.device.autocast_dtype` resolves
(``"auto"``: bf16 on a CUDA GPU or a CPU with bf16 matrix units, else fp32). Layout: where
`dasrlib.device.prefers_channels_last` says so (CUDA; bf16 on a CPU), the network runs
channels-last, kernels and tiles alike (the fused network is converted in place; a plain
network is copied first, so the caller's model is never changed).

Plain SR networks (an `SRResNet`, any ``nn.Module`` mapping [1, 3, H, W] -> [1, 3, sH, sW], or a
spandrel ``ImageModelDescriptor``) skip steps 1-2.

The tiling engine (geometry, cross-fades, banded accumulation, the overflow guard) lives in
`dasrlib.tiling`; with ``overlap`` at least the network's receptive-field radius
(`DEFAULT_OVERLAP` = 35 for the 16-block SRResNet expert) tiled DASR equals untiled DASR.
Model choice is `dasrlib.models.loading` (`load_sr_model`, `choose_model`) and editing v by
physical values is `dasrlib.degradation.edit` (`edit_vector`); import them from there.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dasrlib.degradation.edit import (
    as_vector,
)
from dasrlib.degradation.vector import NUM_SLOTS
from dasrlib.device import (
    PrecisionGuard,
    autocast_dtype,
    module_device,
    prefers_channels_last,
    resolve_device,
)
from dasrlib.io import UPSCALE_OUTPUT_TEXT, LoadedImage, read_image, write_png
from dasrlib.models.loading import (
    is_dasr,
)
from dasrlib.tiling import (
    DEFAULT_OVERLAP,
    OUTPUT_DTYPES,
    SRNetwork,
    check_tile_memory,
    even_cuts,
    run_tiled,
)

__all__ = [
    "DEFAULT_TILE",
    "PIXEL_RANGE_TOLERANCE",
    "PREDICTOR_MAX_SIDE",
    "UpscalePlan",
    "UpscaledImage",
    "plan_upscale",
    "predict_vector",
    "upscale",
    "upscale_to_file",
]

logger = logging.getLogger(__name__)

DEFAULT_TILE = 512
"""Tile core size (LR pixels) used by the CLI; `upscale` runs untiled unless given ``tile``."""

PREDICTOR_MAX_SIDE = 1024
"""Longest side (LR pixels) the predictor sees in one pass; larger images are split into crops."""


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
    """What runs over the tiles: the (fused) network, its scale, the v and a behind it, and
    whether the network's kernels are channels-last (then its tiles must be too)."""

    network: SRNetwork
    scale: int
    v: Tensor | None
    a: Tensor | None
    channels_last: bool = False


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


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


PIXEL_RANGE_TOLERANCE = 0.05
"""How far outside [0, 1] input pixels may lie (resampling overshoot) before `upscale` and
`predict_vector` refuse them as being in another range (0-255 data, say)."""


def _as_batch(image: Tensor, *, what: str = "image") -> Tensor:
    """[3, H, W] / [1, 3, H, W] (or one gray channel) float in [0, 1] -> [1, 3, H, W] float32.

    Raises `ValueError` naming `what` for an empty image, NaN or Inf pixels, or values outside
    [0, 1] by more than `PIXEL_RANGE_TOLERANCE` (they would be clamped into a wrong result).
    """
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
    if batch.shape[-2] == 0 or batch.shape[-1] == 0:
        raise ValueError(
            f"{what} is empty ({batch.shape[-1]}x{batch.shape[-2]} pixels); nothing to upscale"
        )
    finite = torch.isfinite(batch)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(
            f"{what} holds {bad} NaN or Inf pixel value(s) of {batch.numel()}; the input image "
            "is invalid (expected finite values in [0, 1])"
        )
    low, high = float(batch.min()), float(batch.max())
    if low < -PIXEL_RANGE_TOLERANCE or high > 1.0 + PIXEL_RANGE_TOLERANCE:
        hint = " (0-255 data? divide by 255)" if high > 2.0 else ""
        raise ValueError(
            f"{what} has pixel values in [{low:.4g}, {high:.4g}]; expected [0, 1]{hint}"
        )
    if batch.shape[1] == 1:
        batch = batch.expand(1, 3, *batch.shape[2:])
    return batch.detach().float()


def _architecture_options(model: object) -> dict[str, object]:
    """The constructor options a model of this project records (``model.architecture``), or {}."""
    architecture = getattr(model, "architecture", None)
    options = architecture.get("options") if isinstance(architecture, dict) else None
    return options if isinstance(options, dict) else {}


def _v_dim(model: object) -> int:
    """The length of the degradation vector `model` takes (its predictor's output)."""
    v_dim = _architecture_options(model).get("v_dim", NUM_SLOTS)
    return v_dim if isinstance(v_dim, int) else NUM_SLOTS


# --------------------------------------------------------------------------------------------
# Degradation prediction and mixing
# --------------------------------------------------------------------------------------------


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
            "expert_weights and fuse, as dasrlib.models.dasr.DASR has)"
        )
    if predictor_max_side < 16:
        raise ValueError(f"predictor_max_side must be at least 16, got {predictor_max_side}")
    if isinstance(image, LoadedImage):
        lr = _as_batch(image.rgb, what=str(image.path))
    else:
        lr = _as_batch(image)
    run_device = _pick_device(model, device)
    guard = PrecisionGuard(run_device, precision)
    height, width = lr.shape[-2:]
    rows = even_cuts(height, math.ceil(height / predictor_max_side))
    cols = even_cuts(width, math.ceil(width / predictor_max_side))
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


def plan_upscale(
    lr: Tensor,
    model: nn.Module | SRNetwork,
    *,
    v: Tensor | None = None,
    precision: str = "auto",
    device: str | torch.device | None = None,
    predictor_max_side: int = PREDICTOR_MAX_SIDE,
    channels_last: bool = False,
) -> UpscalePlan:
    """Steps 1-2 of the inference path: predict (or take) v, compute a, fuse the experts once.

    For a plain SR network the plan is the network itself (``v`` must then be None).
    ``channels_last``: the planned network holds channels-last kernels (the fused network is
    converted; a plain ``nn.Module`` is copied, then converted; other callables and
    classical-MoE mixing stay as they are, which ``plan.channels_last`` then says).
    """
    run_device = _pick_device(model, device)
    if not is_dasr(model):
        if v is not None:
            raise ValueError(
                f"v was given but {type(model).__name__} is not degradation-adaptive (no predictor)"
            )
        scale = _network_scale(model, lr, run_device)
        if channels_last and isinstance(model, nn.Module):
            copied = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
            return UpscalePlan(network=copied, scale=scale, v=None, a=None, channels_last=True)
        return UpscalePlan(network=model, scale=scale, v=None, a=None)
    if v is None:
        v = predict_vector(
            lr,
            model,
            precision=precision,
            device=run_device,
            predictor_max_side=predictor_max_side,
        )
    v = as_vector(v, length=_v_dim(model))
    fused = False
    with torch.no_grad(), _eval_mode(model):
        a = model.expert_weights(v.to(run_device)[None])[0]
        network: SRNetwork
        if getattr(model, "mixing", "weights") == "outputs":
            # Classical MoE (Fig. 4(d)) has no single fused network: all experts run per tile.
            def network(x: Tensor) -> Tensor:
                return model.super_resolve(x, a)
        else:
            network = model.fuse(a).eval()
            fused = True
            if channels_last:
                network = network.to(memory_format=torch.channels_last)
    return UpscalePlan(
        network=network,
        scale=int(model.scale),
        v=v.cpu(),
        a=a.float().cpu(),
        channels_last=channels_last and fused,
    )


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


def _feature_channels(model: object) -> int:
    """The network's feature width (``num_feat``), for the memory bound of `check_tile_memory`.

    Read from the recorded architecture, else the widest convolution input; 64 where neither
    exists (an arbitrary callable).
    """
    num_feat = _architecture_options(model).get("num_feat")
    if isinstance(num_feat, int):
        return num_feat
    module = model if isinstance(model, nn.Module) else getattr(model, "model", None)
    if isinstance(module, nn.Module):
        widths = [m.in_channels for m in module.modules() if isinstance(m, nn.Conv2d)]
        if widths:
            return max(widths)
    return 64


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
    channels_last: bool | None = None,
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
    float32 copy of the whole output exists). ``channels_last``: run the network channels-last;
    None: `dasrlib.device.prefers_channels_last` for the resolved precision. The alpha plane is
    upscaled bicubically, clamped.
    """
    if output_dtype not in OUTPUT_DTYPES:
        raise ValueError(f"output_dtype must be one of {OUTPUT_DTYPES}, got {output_dtype}")
    if tile is not None and tile < 1:
        raise ValueError(f"tile must be a positive number of LR pixels or None, got {tile}")
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    source = image if isinstance(image, LoadedImage) else None
    if source is not None:
        lr = _as_batch(source.rgb, what=str(source.path))
        gray = source.was_gray
    else:
        lr = _as_batch(image)
        gray = image.shape[-3] == 1
    run_device = _pick_device(model, device)
    check_tile_memory(
        lr.shape[-2],
        lr.shape[-1],
        tile=tile,
        overlap=overlap,
        scale=_network_scale(model, lr, run_device),
        feature_channels=_feature_channels(model),
        device=run_device,
        what=_describe(source),
    )
    if channels_last is None:
        channels_last = prefers_channels_last(run_device, autocast_dtype(run_device, precision))
    plan = plan_upscale(
        lr,
        model,
        v=v,
        precision=precision,
        device=run_device,
        predictor_max_side=predictor_max_side,
        channels_last=channels_last,
    )
    guard = PrecisionGuard(run_device, precision, channels_last=plan.channels_last)
    with torch.no_grad(), _eval_mode(model):
        rgb = run_tiled(
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
            alpha = run_tiled(
                _as_batch(source.alpha)[:, :1],
                _bicubic(plan.scale),
                scale=plan.scale,
                tile=tile,
                overlap=overlap,
                out_channels=1,
                out_dtype=output_dtype,
                guard=PrecisionGuard(run_device, "fp32"),
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
    channels_last: bool | None = None,
    overwrite: bool = True,
) -> UpscaledImage:
    """Read (if given a path), super-resolve and write a PNG atomically; return the result.

    The output is quantised tile by tile into a uint8 (8-bit input) or uint16 (16-bit input)
    array, which is what is written: memory stays at one integer copy of the output. Alpha is
    kept; a gray input is written gray when ``keep_gray``. Refuses to write onto the input file.
    ``overwrite=False``: `dasrlib.io.OutputExistsError` if ``out_path`` exists when the result is
    moved into place (nothing is replaced).
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
        channels_last=channels_last,
    )
    assert isinstance(result, UpscaledImage)
    write_png(
        out,
        result.rgb,
        alpha=result.alpha,
        bit_depth=result.bit_depth,
        gray=result.rgb.shape[0] == 1,
        text=UPSCALE_OUTPUT_TEXT,
        overwrite=overwrite,
    )
    return result
