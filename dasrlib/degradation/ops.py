"""Batched degradation operations with per-sample parameters (Sec. 3.2; Real-ESRGAN's operators).

All functions take and return RGB float images [B, 3, H, W] in [0, 1] on any device. Functions
that draw random numbers take an explicit `torch.Generator`; noise is drawn on the generator's
device and moved to the image's device (keep both on the same device for speed).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .jpeg import jpeg_codec
from .kernels import opencv_gaussian_kernel, pad_image
from .levels import RESIZE_MODES

__all__ = [
    "bicubic_downsample",
    "bilinear_resize",
    "gaussian_noise",
    "jpeg_compress",
    "poisson_noise",
    "quantize_8bit",
    "resize_per_sample",
    "rgb_to_gray",
    "usm_sharpen",
]

# ITU-R BT.601 luma weights as in torchvision's rgb_to_grayscale (what the reference uses).
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)


def _linear_resize_height(img: Tensor, out_h: int) -> Tensor:
    """1-D linear interpolation along H with PyTorch's rule for align_corners=False.

    Source row (dst + 0.5) * in / out - 0.5 clamped at 0, its floor and the next row (clamped at
    the edge), weighted by the distance. Positions in float64, weights rounded once to float32;
    rows gathered along H (a fast gather), combined by element-wise products and one sum.
    """
    in_h = img.shape[-2]
    dst = torch.arange(out_h, dtype=torch.float64)
    src = ((dst + 0.5) * (in_h / out_h) - 0.5).clamp(min=0)
    lo = src.floor().long().clamp(max=in_h - 1)
    hi = (lo + 1).clamp(max=in_h - 1)
    w_hi = (src - lo).clamp(max=1)
    w_lo = (1 - w_hi).float().to(img.device)[:, None]
    w_hi = w_hi.float().to(img.device)[:, None]
    return (
        img.index_select(-2, lo.to(img.device)) * w_lo
        + img.index_select(-2, hi.to(img.device)) * w_hi
    )


def bilinear_resize(img: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize as F.interpolate(align_corners=False, no antialias), on any thread count.

    torch's CPU kernel rounds some pixels differently with the number of threads, which made
    seeded test sets and training pairs depend on OMP_NUM_THREADS. Here the same taps are
    applied by gathers and element-wise products (width first, then height, in PyTorch's order),
    which round the same way however the work is split. Within 1e-4 of torch's kernel, which
    computes source positions in float32.

    Args:
        img: [B, C, H, W] float.
        size: output (height, width).

    Returns:
        [B, C, size[0], size[1]], contiguous.
    """
    columns = img.transpose(-1, -2).contiguous()
    rows = _linear_resize_height(columns, size[1]).transpose(-1, -2).contiguous()
    return _linear_resize_height(rows, size[0])


def _interpolate(img: Tensor, size: tuple[int, int], mode: str, antialias: bool) -> Tensor:
    if mode == "area":
        return F.interpolate(img, size=size, mode="area")
    if mode == "bilinear" and not antialias:
        return bilinear_resize(img, size)
    if mode in ("bilinear", "bicubic"):
        return F.interpolate(img, size=size, mode=mode, align_corners=False, antialias=antialias)
    raise ValueError(f"unknown resize mode {mode!r}; expected one of {RESIZE_MODES}")


def resize_per_sample(
    img: Tensor,
    size: tuple[int, int],
    mode: Tensor,
    *,
    antialias: bool = False,
    candidates: Sequence[int] = (0, 1, 2),
) -> Tensor:
    """Resize every sample to `size` with its own interpolation mode.

    Each candidate mode resizes the whole batch and every sample keeps the result of its mode
    (no device sync; interpolation is cheap next to the rest of the pipeline).

    Args:
        img: [B, C, H, W].
        size: output (height, width), shared by the batch.
        mode: [B] integer indices into `RESIZE_MODES` ("area", "bilinear", "bicubic"), each one
            of `candidates`.
        antialias: antialias bilinear/bicubic down-sampling (the reference's random resizes don't).
        candidates: the mode indices that may occur in `mode`.

    Returns:
        [B, C, size[0], size[1]].
    """
    out = _interpolate(img, size, RESIZE_MODES[candidates[0]], antialias)
    for m in candidates[1:]:
        resized = _interpolate(img, size, RESIZE_MODES[m], antialias)
        out = torch.where((mode == m).view(-1, 1, 1, 1), resized, out)
    return out


def rgb_to_gray(img: Tensor) -> Tensor:
    """[B, 3, H, W] RGB -> [B, 1, H, W] luma (0.2989 R + 0.587 G + 0.114 B)."""
    r, g, b = img.unbind(dim=1)
    w_r, w_g, w_b = _GRAY_WEIGHTS
    return (w_r * r + w_g * g + w_b * b).unsqueeze(1)


def gaussian_noise(
    img: Tensor, sigma: Tensor, gray: Tensor, *, generator: torch.Generator
) -> Tensor:
    """Additive Gaussian noise for `img` (not added): N(0, (sigma / 255)^2) per pixel.

    Args:
        img: [B, C, H, W] (only its shape, dtype and device are used).
        sigma: [B] standard deviations in 0-255 units.
        gray: [B] bool; gray samples get one noise plane shared by all channels.
        generator: the source of the noise.

    Returns:
        [B, C, H, W] noise on `img.device`.
    """
    noise = torch.randn(
        img.shape, generator=generator, device=generator.device, dtype=img.dtype
    ).to(img.device)
    gray = gray.to(img.device).view(-1, 1, 1, 1)
    noise = torch.where(gray, noise[:, :1].expand_as(noise), noise)
    return noise * (sigma.to(device=img.device, dtype=img.dtype).view(-1, 1, 1, 1) / 255.0)


def _distinct_8bit_levels(img_8bit: Tensor) -> Tensor:
    """[B] number of distinct integer values in each sample of an integer image in [0, 255]."""
    flat = img_8bit.reshape(img_8bit.shape[0], -1)
    seen = torch.zeros(flat.shape[0], 256, dtype=torch.bool, device=flat.device)
    seen.scatter_(1, flat, True)
    return seen.sum(dim=1)


def poisson_noise(
    img: Tensor, scale: Tensor, gray: Tensor, *, generator: torch.Generator
) -> Tensor:
    """Shot noise for `img` (not added), as Real-ESRGAN's `generate_poisson_noise_pt`.

    The image (or its luma, for gray samples) is rounded to 8 bits; with v the number of its
    distinct values rounded up to a power of two, the noise is (Poisson(x v) / v - x) * scale.

    Args:
        img: [B, 3, H, W] in [0, 1].
        scale: [B] noise scale.
        gray: [B] bool; gray samples draw noise on the luma and share it across channels.
        generator: the source of the Poisson draws.

    Returns:
        [B, 3, H, W] noise on `img.device`.
    """
    gray = gray.to(img.device).view(-1, 1, 1, 1)
    source = torch.where(gray, rgb_to_gray(img).expand_as(img), img)
    source_8bit = (source * 255.0).round().clamp(0, 255)
    levels = _distinct_8bit_levels(source_8bit.long())
    vals = torch.exp2(torch.ceil(torch.log2(levels.to(img.dtype)))).view(-1, 1, 1, 1)
    source = source_8bit / 255.0
    rate = (source * vals).to(generator.device)
    counts = torch.poisson(rate, generator=generator).to(img.device)
    noise = counts / vals - source
    noise = torch.where(gray, noise[:, :1].expand_as(noise), noise)
    return noise * scale.to(device=img.device, dtype=img.dtype).view(-1, 1, 1, 1)


def jpeg_compress(img: Tensor, quality: Tensor) -> Tensor:
    """JPEG encode-decode at a per-sample quality (4:2:0, standard tables); see `jpeg.jpeg_codec`.

    Args:
        img: [B, 3, H, W] of any size; clamped to [0, 1] before coding, as the reference does.
        quality: [B] JPEG quality in [1, 100] (floats allowed).

    Returns:
        [B, 3, H, W] in [0, 1].
    """
    return jpeg_codec(img, quality)


def quantize_8bit(img: Tensor) -> Tensor:
    """Clamp to [0, 1] and round to the 256 levels of an 8-bit image (x * 255, round, / 255)."""
    return (img * 255.0).round().clamp(0.0, 255.0) / 255.0


def bicubic_downsample(img: Tensor, scale: int = 4) -> Tensor:
    """Plain bicubic down-sampling by `scale` (torch bicubic, antialias=True), not quantised."""
    h, w = img.shape[-2:]
    return F.interpolate(
        img, size=(h // scale, w // scale), mode="bicubic", align_corners=False, antialias=True
    )


def _separable_blur(img: Tensor, line: Tensor) -> Tensor:
    """Correlate each channel with outer(line, line) as two 1-D depthwise passes (reflect pad)."""
    b, c, h, w = img.shape
    k = line.numel()
    padded = pad_image(img, k // 2).reshape(1, b * c, h + k - 1, w + k - 1)
    line = line.to(device=img.device, dtype=img.dtype)
    out = F.conv2d(padded, line.view(1, 1, 1, k).repeat(b * c, 1, 1, 1), groups=b * c)
    out = F.conv2d(out, line.view(1, 1, k, 1).repeat(b * c, 1, 1, 1), groups=b * c)
    return out.view(b, c, h, w)


def usm_sharpen(
    img: Tensor, *, weight: float = 0.5, radius: int = 50, threshold: float = 10.0
) -> Tensor:
    """Unsharp-mask sharpening of the ground truth, as BasicSR's `USMSharp` (Sec. 4.1, Eq. 3).

    Blur with an OpenCV Gaussian of size radius (made odd: 51) and sigma 0 (so sigma = 8);
    residual = img - blur; mask = |residual| * 255 > threshold, softened by the same blur;
    out = mask * clip(img + weight * residual) + (1 - mask) * img.

    Args:
        img: [B, 3, H, W] in [0, 1].

    Returns:
        [B, 3, H, W] in [0, 1].
    """
    size = radius if radius % 2 == 1 else radius + 1
    kernel = opencv_gaussian_kernel(size, 0.0)
    # The 2-D kernel is an outer product: run it as two 1-D passes (same result, far fewer MACs).
    line = kernel.sum(dim=1)
    blur = _separable_blur(img, line)
    residual = img - blur
    mask = (residual.abs() * 255.0 > threshold).to(img.dtype)
    soft_mask = _separable_blur(mask, line)
    sharp = (img + weight * residual).clamp(0.0, 1.0)
    return soft_mask * sharp + (1.0 - soft_mask) * img
