"""Batched JPEG encode-decode with a per-sample quality, as a baseline libjpeg codec does it.

Steps (ITU-T T.81 / JFIF, the choices of libjpeg's defaults that Pillow uses): the RGB image is
rounded to 8 bits, converted to full-range YCbCr, padded to multiples of 16 by edge replication,
chroma is averaged over 2 x 2 pixels (4:2:0), each 8 x 8 block is transformed with the DCT,
divided by the standard tables of Annex K scaled by libjpeg's quality formula (entries rounded and
clipped to [1, 255]) and rounded; decoding multiplies back, inverts the DCT, rounds and clips the
samples, upsamples chroma with libjpeg's "fancy" triangle filter (bilinear, half-pixel centres)
and converts back to RGB.

Why not `kornia.enhance.jpeg_codec_differentiable`: it is differentiable, which the degradation
pipeline does not need, and it issues about 500 tensor operations per call against about 60
here; the severe level runs JPEG up to three times per batch, which made synthesis launch-bound on
a GPU (measured on an H100). The unit tests check this codec against Pillow and against kornia.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["jpeg_codec", "quantization_tables"]

# ITU-T T.81 Annex K, tables K.1 (luminance) and K.2 (chrominance), in row-major order.
_LUMA = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
_CHROMA = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
)

# Full-range (JFIF) colour conversion, rows give Y, Cb, Cr (offset 128 added to Cb, Cr).
_RGB_TO_YCBCR = (
    (0.299, 0.587, 0.114),
    (-0.168735892, -0.331264108, 0.5),
    (0.5, -0.418687589, -0.081312411),
)
_YCBCR_TO_RGB = (
    (1.0, 0.0, 1.402),
    (1.0, -0.344136286, -0.714136286),
    (1.0, 1.772, 0.0),
)


@functools.lru_cache(maxsize=16)
def _constants(device: torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
    """Tables, DCT matrix and colour matrices on `device` (built once per device and dtype)."""
    k = torch.arange(8, dtype=torch.float64)
    dct = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    dct[0] /= math.sqrt(2)  # orthonormal DCT-II: F = D X D^T is the JPEG forward DCT
    values = {
        "tables": torch.tensor((_LUMA, _CHROMA), dtype=torch.float64),
        "dct": dct,
        "to_ycbcr": torch.tensor(_RGB_TO_YCBCR, dtype=torch.float64),
        "to_rgb": torch.tensor(_YCBCR_TO_RGB, dtype=torch.float64),
        "offset": torch.tensor([0.0, 128.0, 128.0], dtype=torch.float64),
    }
    return {name: t.to(device=device, dtype=dtype) for name, t in values.items()}


def quantization_tables(quality: Tensor) -> tuple[Tensor, Tensor]:
    """[B, 8, 8] luminance and chrominance tables for a [B] quality, as libjpeg scales them.

    scale = floor(5000 / q) for q < 50, else 200 - 2 q; entry = floor((base * scale + 50) / 100)
    clipped to [1, 255] (baseline). Integer qualities give exactly libjpeg's tables.
    """
    q = quality.to(torch.float32).clamp(1.0, 100.0).view(-1, 1, 1, 1)
    const = _constants(q.device, torch.float32)
    scale = torch.where(q < 50, torch.floor(5000.0 / q), 200.0 - 2.0 * q)
    tables = torch.floor((const["tables"] * scale + 50.0) / 100.0).clamp(1.0, 255.0)
    return tables[:, 0], tables[:, 1]


def _blocks(plane: Tensor) -> Tensor:
    """[B, H, W] -> [B, H/8, W/8, 8, 8]."""
    b, h, w = plane.shape
    return plane.view(b, h // 8, 8, w // 8, 8).transpose(2, 3)


def _unblocks(blocks: Tensor) -> Tensor:
    b, nh, nw = blocks.shape[:3]
    return blocks.transpose(2, 3).reshape(b, nh * 8, nw * 8)


def _code(plane: Tensor, table: Tensor, dct: Tensor) -> Tensor:
    """Quantise and dequantise every 8 x 8 block of level-shifted samples; return samples."""
    blocks = _blocks(plane - 128.0)
    coeffs = dct @ blocks @ dct.T
    table = table[:, None, None]
    coeffs = torch.round(coeffs / table) * table
    samples = dct.T @ coeffs @ dct
    return (_unblocks(samples) + 128.0).round().clamp(0.0, 255.0)


def jpeg_codec(img: Tensor, quality: Tensor) -> Tensor:
    """JPEG encode-decode of each sample at its own quality (4:2:0, standard tables).

    Args:
        img: [B, 3, H, W] RGB in [0, 1] (clamped and rounded to 8 bits first, like a file).
        quality: [B] quality in [1, 100]; fractional values interpolate the table scaling.

    Returns:
        [B, 3, H, W] decoded RGB in [0, 1], on 8-bit levels.
    """
    if img.ndim != 4 or img.shape[1] != 3:
        raise ValueError(f"expected an RGB batch [B, 3, H, W], got {tuple(img.shape)}")
    b, _, h, w = img.shape
    if quality.shape != (b,):
        raise ValueError(f"expected one quality per sample ({b}), got shape {tuple(quality.shape)}")
    dtype = torch.float32
    const = _constants(img.device, dtype)
    rgb = (img.to(dtype).clamp(0.0, 1.0) * 255.0).round()
    pad_h, pad_w = (-h) % 16, (-w) % 16
    if pad_h or pad_w:
        rgb = F.pad(rgb, (0, pad_w, 0, pad_h), mode="replicate")
    offset = const["offset"].view(1, 3, 1, 1)
    # libjpeg holds every intermediate plane as integer samples: round after each resampling.
    ycbcr = (torch.einsum("ij,bjhw->bihw", const["to_ycbcr"], rgb) + offset).round().clamp(0, 255)
    luma_table, chroma_table = quantization_tables(quality.to(img.device))
    y = _code(ycbcr[:, 0], luma_table, const["dct"])
    chroma = F.avg_pool2d(ycbcr[:, 1:], 2).round()
    ch, cw = chroma.shape[-2:]
    chroma = _code(
        chroma.reshape(2 * b, ch, cw),
        chroma_table[:, None].expand(b, 2, 8, 8).reshape(2 * b, 8, 8),
        const["dct"],
    )
    chroma = F.interpolate(
        chroma.view(b, 2, ch, cw), scale_factor=2.0, mode="bilinear", align_corners=False
    ).round()
    ycbcr = torch.cat((y[:, None], chroma), dim=1) - offset
    rgb = torch.einsum("ij,bjhw->bihw", const["to_rgb"], ycbcr).round().clamp(0.0, 255.0)
    return (rgb[..., :h, :w] / 255.0).to(img.dtype)
