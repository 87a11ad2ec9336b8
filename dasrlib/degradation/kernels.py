"""Blur kernels built per sample on any device, and the per-sample 2-D filter that applies them.

Sec. 3.2 of the paper (following Real-ESRGAN): isotropic / anisotropic Gaussian kernels and the
circular low-pass ("sinc") kernel. Kernels of different sizes in one batch are zero-padded to a
common odd size; the zero border does not change the filtered image.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "filter2d",
    "gaussian_kernels",
    "opencv_gaussian_kernel",
    "pad_image",
    "sinc_kernels",
]


@functools.lru_cache(maxsize=32)
def _grid(
    size: int, *, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Centred integer grid (x = column offset, y = row offset) and its absolute values, each
    [size, size]; built once per size, device and dtype (read only: the kernels of every batch
    share it, which saves the device launches of rebuilding it)."""
    half = size // 2
    axis = torch.arange(-half, half + 1, device=device, dtype=dtype)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    return xx, yy, xx.abs(), yy.abs()


def _support_mask(kernel_size: Tensor, abs_x: Tensor, abs_y: Tensor) -> Tensor:
    """[B, K, K] mask of the k_i x k_i centred window of each sample inside the K x K grid
    (``abs_x``, ``abs_y``: the grid's absolute offsets)."""
    half = (kernel_size // 2).to(abs_x.dtype).view(-1, 1, 1)
    return (abs_x <= half) & (abs_y <= half)


def _common_size(kernel_size: Tensor, size: int | None, what: str) -> int:
    """The common odd size: the largest kernel size (one device sync, sizes checked) or `size`."""
    if size is not None:
        if size % 2 == 0 or size < 1:
            raise ValueError(f"common kernel size must be odd and positive, got {size}")
        return size
    sizes = kernel_size.tolist()
    if any(k % 2 == 0 or k < 1 for k in sizes):
        raise ValueError(f"{what} kernel sizes must be odd, got {sizes}")
    return max(sizes)


def gaussian_kernels(
    kernel_size: Tensor,
    sigma_x: Tensor,
    sigma_y: Tensor,
    theta: Tensor,
    *,
    size: int | None = None,
) -> Tensor:
    """Bivariate Gaussian kernels, one per sample, each summing to 1.

    Args:
        kernel_size: [B] odd integers (the support of each kernel).
        sigma_x, sigma_y: [B] standard deviations in pixels along the principal axes.
        theta: [B] rotation of the principal axes in radians (covariance U diag(sx^2, sy^2) U^T
            with U the rotation by theta, as in Real-ESRGAN's `sigma_matrix2`).
        size: common output size K (odd, >= every kernel size, not checked: no device sync);
            default the largest kernel size.

    Returns:
        [B, K, K] float tensor on the device of `sigma_x`.
    """
    common = _common_size(kernel_size, size, "Gaussian")
    dtype = sigma_x.dtype if sigma_x.is_floating_point() else torch.float32
    xx, yy, abs_x, abs_y = _grid(common, device=sigma_x.device, dtype=dtype)
    cos, sin = torch.cos(theta).view(-1, 1, 1), torch.sin(theta).view(-1, 1, 1)
    inv_x2 = sigma_x.view(-1, 1, 1).pow(-2)
    inv_y2 = sigma_y.view(-1, 1, 1).pow(-2)
    # Inverse covariance U diag(1/sx^2, 1/sy^2) U^T, written out.
    a = cos * cos * inv_x2 + sin * sin * inv_y2
    b = cos * sin * (inv_x2 - inv_y2)
    d = sin * sin * inv_x2 + cos * cos * inv_y2
    quad = a * xx * xx + 2.0 * b * xx * yy + d * yy * yy
    kernel = torch.exp(-0.5 * quad) * _support_mask(kernel_size.to(sigma_x.device), abs_x, abs_y)
    return kernel / kernel.sum(dim=(1, 2), keepdim=True)


def sinc_kernels(kernel_size: Tensor, omega_c: Tensor, *, size: int | None = None) -> Tensor:
    """Circular low-pass kernels (2-D sinc), one per sample, each summing to 1.

    The formula of Real-ESRGAN's `circular_lowpass_kernel`: k(r) = w J1(w r) / (2 pi r) with the
    centre value w^2 / (4 pi), cut to the k_i x k_i window and normalised.

    Args:
        kernel_size: [B] odd integers.
        omega_c: [B] cut-off frequency in radians per pixel (pi is the Nyquist frequency).
        size: common output size K (odd, >= every kernel size, not checked: no device sync);
            default the largest kernel size.

    Returns:
        [B, K, K] float tensor on the device of `omega_c`.
    """
    common = _common_size(kernel_size, size, "sinc")
    xx, yy, abs_x, abs_y = _grid(common, device=omega_c.device, dtype=omega_c.dtype)
    radius = torch.sqrt(xx * xx + yy * yy)
    w = omega_c.view(-1, 1, 1)
    safe_radius = torch.where(radius > 0, radius, torch.ones_like(radius))
    kernel = w * torch.special.bessel_j1(w * safe_radius) / (2.0 * math.pi * safe_radius)
    kernel = torch.where(radius > 0, kernel, w * w / (4.0 * math.pi))
    kernel = kernel * _support_mask(kernel_size.to(omega_c.device), abs_x, abs_y)
    return kernel / kernel.sum(dim=(1, 2), keepdim=True)


def opencv_gaussian_kernel(
    size: int, sigma: float = 0.0, *, device: torch.device | None = None
) -> Tensor:
    """[size, size] separable Gaussian as OpenCV's `getGaussianKernel(size, sigma)` outer product.

    `sigma <= 0` gives OpenCV's default 0.3 ((size - 1) / 2 - 1) + 0.8 (8.0 for size 51).
    """
    if size % 2 == 0:
        raise ValueError(f"kernel size must be odd, got {size}")
    if sigma <= 0:
        sigma = 0.3 * ((size - 1) * 0.5 - 1.0) + 0.8
    axis = torch.arange(size, device=device, dtype=torch.float64) - (size - 1) / 2
    line = torch.exp(-(axis**2) / (2.0 * sigma * sigma))
    line = line / line.sum()
    return torch.outer(line, line).to(torch.float32)


def pad_image(img: Tensor, pad: int) -> Tensor:
    """Pad H and W by `pad` on each side: reflect, or replicate where the image is too small.

    Reflect padding (what the reference's `filter2D` uses) needs pad < H and pad < W; tiny
    intermediate images (e.g. a 64-pixel patch shrunk to 10 pixels) fall back to replicate.
    """
    if pad == 0:
        return img
    mode = "reflect" if pad < min(img.shape[-2:]) else "replicate"
    return F.pad(img, (pad, pad, pad, pad), mode=mode)


def filter2d(img: Tensor, kernel: Tensor) -> Tensor:
    """Correlate every channel of each sample with its own kernel (cv2.filter2D semantics).

    Args:
        img: [B, C, H, W].
        kernel: [B, K, K] (one kernel per sample) or [K, K] (shared), K odd.

    Returns:
        [B, C, H, W], same dtype and device as `img`; borders handled by `pad_image`.
    """
    b, c, h, w = img.shape
    k = kernel.shape[-1]
    if k % 2 == 0 or kernel.shape[-2] != k:
        raise ValueError(f"kernel must be square with an odd size, got {tuple(kernel.shape)}")
    padded = pad_image(img, k // 2)
    kernel = kernel.to(device=img.device, dtype=img.dtype)
    if kernel.ndim == 2:
        out = F.conv2d(padded.reshape(b * c, 1, *padded.shape[-2:]), kernel[None, None])
        return out.view(b, c, h, w)
    if kernel.shape[0] != b:
        raise ValueError(f"{kernel.shape[0]} kernels for a batch of {b} images")
    weight = kernel.repeat_interleave(c, dim=0).unsqueeze(1)
    out = F.conv2d(padded.reshape(1, b * c, *padded.shape[-2:]), weight, groups=b * c)
    return out.view(b, c, h, w)
