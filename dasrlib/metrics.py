"""Image quality metrics with the paper's conventions (Sec. 4.1 of the paper).

- PSNR on the Y channel of YCbCr (ITU-R BT.601, studio range 16-235), 4-pixel border crop, computed
  on 8-bit rounded images (as BasicSR's `calculate_psnr(..., test_y_channel=True)`).
- SSIM on the same Y channel with an 11x11 Gaussian window, sigma 1.5 (BasicSR's `calculate_ssim`).
- LPIPS, AlexNet variant, RGB scaled to [-1, 1], no crop, through the `lpips` package. Its trunk
  needs ImageNet AlexNet weights: a given path, else torchvision's own file in the torch hub cache,
  else the converted file of ``python -m dasrlib.data fetch imagenet-features``
  (`dasrlib.pretrained`); nothing is downloaded here. When none is there, `load_lpips` returns an
  `LPIPSUnavailable` whose text ("n/a: weights not found at <path>") goes into the table.

Inputs are either uint8 arrays H x W x 3 (RGB) or float tensors in [0, 1] shaped [3, H, W] or
[1, 3, H, W]; both are converted to 8-bit rounded RGB before any metric is computed.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "ALEXNET_CHECKPOINT_NAME",
    "LPIPSMetric",
    "LPIPSUnavailable",
    "LPIPSWeightsNotFound",
    "default_alexnet_path",
    "load_lpips",
    "lpips_linear_weights_path",
    "psnr_y",
    "rgb_to_y",
    "torchvision_alexnet_path",
    "ssim_y",
    "to_uint8_rgb",
]

logger = logging.getLogger(__name__)

ImageLike = np.ndarray | torch.Tensor

#: File name torchvision gives the ImageNet AlexNet weights (AlexNet_Weights.IMAGENET1K_V1).
ALEXNET_CHECKPOINT_NAME = "alexnet-owt-7be5be79.pth"


# --------------------------------------------------------------------------------------------------
# Conversions
# --------------------------------------------------------------------------------------------------


def to_uint8_rgb(img: ImageLike) -> np.ndarray:
    """Return an H x W x 3 uint8 RGB array from a uint8 array or a float tensor in [0, 1].

    Float tensors ([3, H, W] or [1, 3, H, W]) are clamped to [0, 1], scaled by 255 and rounded,
    i.e. the image as it would be saved to an 8-bit PNG.
    """
    if isinstance(img, torch.Tensor):
        t = img.detach()
        if t.ndim == 4:
            if t.shape[0] != 1:
                raise ValueError(
                    f"expected a single image [1, 3, H, W], got shape {tuple(t.shape)}"
                )
            t = t[0]
        if t.ndim != 3 or t.shape[0] != 3:
            raise ValueError(
                f"expected an RGB tensor [3, H, W] or [1, 3, H, W], got {tuple(t.shape)}"
            )
        if not t.is_floating_point():
            raise TypeError(f"expected a float tensor in [0, 1], got dtype {t.dtype}")
        t = (t.float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
        return t.permute(1, 2, 0).cpu().numpy()
    if isinstance(img, np.ndarray):
        if img.dtype != np.uint8:
            raise TypeError(f"expected a uint8 H x W x 3 array, got dtype {img.dtype}")
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"expected a uint8 H x W x 3 array, got shape {img.shape}")
        return img
    raise TypeError(
        f"expected a numpy uint8 array or a torch float tensor, got {type(img).__name__}"
    )


def rgb_to_y(img_u8: np.ndarray) -> np.ndarray:
    """Y of YCbCr, ITU-R BT.601 studio range: Y = 16 + 65.481 R + 128.553 G + 24.966 B.

    R, G, B in [0, 1].

    Input H x W x 3 uint8 RGB; output H x W float64 in [16, 235] (not rounded, as in BasicSR).
    """
    rgb = img_u8.astype(np.float64) / 255.0
    return 16.0 + rgb @ np.array([65.481, 128.553, 24.966], dtype=np.float64)


def _paired_y(sr: ImageLike, hr: ImageLike, crop_border: int) -> tuple[np.ndarray, np.ndarray]:
    sr_u8, hr_u8 = to_uint8_rgb(sr), to_uint8_rgb(hr)
    if sr_u8.shape != hr_u8.shape:
        raise ValueError(f"SR shape {sr_u8.shape} differs from HR shape {hr_u8.shape}")
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    y_sr, y_hr = rgb_to_y(sr_u8), rgb_to_y(hr_u8)
    if crop_border > 0:
        c = crop_border
        if y_sr.shape[0] <= 2 * c or y_sr.shape[1] <= 2 * c:
            raise ValueError(f"image {y_sr.shape} too small for a {c}-pixel border crop")
        y_sr, y_hr = y_sr[c:-c, c:-c], y_hr[c:-c, c:-c]
    return y_sr, y_hr


# --------------------------------------------------------------------------------------------------
# PSNR and SSIM
# --------------------------------------------------------------------------------------------------


def psnr_y(sr: ImageLike, hr: ImageLike, *, crop_border: int = 4) -> float:
    """PSNR in dB on the BT.601 Y channel after a `crop_border`-pixel crop (peak 255).

    Identical images give `math.inf` (explicitly, not through a division by zero).
    """
    y_sr, y_hr = _paired_y(sr, hr, crop_border)
    mse = float(np.mean((y_sr - y_hr) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(255.0**2 / mse)


def _gaussian_kernel(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """cv2.getGaussianKernel(size, sigma): 1-D, float64, sums to 1."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """The 2-D window of cv2.getGaussianKernel(size, sigma) outer itself, float64, sums to 1."""
    g = _gaussian_kernel(size, sigma)
    return torch.outer(g, g)


def ssim_y(sr: ImageLike, hr: ImageLike, *, crop_border: int = 4) -> float:
    """SSIM on the BT.601 Y channel after a `crop_border` crop, as BasicSR's `calculate_ssim`.

    Gaussian window 11x11 with sigma 1.5, valid region only, C1 = (0.01 * 255)^2,
    C2 = (0.03 * 255)^2, float64. Returns the mean of the SSIM map.
    """
    y_sr, y_hr = _paired_y(sr, hr, crop_border)
    if min(y_sr.shape) < 11:
        raise ValueError(
            f"image {y_sr.shape} (after cropping) is smaller than the 11x11 SSIM window"
        )
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    # The 2-D window is the outer product of one 1-D Gaussian: filter the columns, then the rows
    # (the same sums, 5x fewer operations; float64 differences of order 1e-15).
    g = _gaussian_kernel()

    def window(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(x, g.view(1, 1, 11, 1)), g.view(1, 1, 1, 11))

    a = torch.from_numpy(y_sr)[None, None]
    b = torch.from_numpy(y_hr)[None, None]
    mu_a, mu_b = window(a), window(b)
    var_a = window(a * a) - mu_a**2
    var_b = window(b * b) - mu_b**2
    cov = window(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return float(ssim_map.mean())


# --------------------------------------------------------------------------------------------------
# LPIPS
# --------------------------------------------------------------------------------------------------


class LPIPSWeightsNotFound(FileNotFoundError):
    """The ImageNet AlexNet weights (or the lpips linear layers) are not on disk."""

    def __init__(self, path: Path, what: str) -> None:
        super().__init__(f"{what} not found at {path}")
        self.path = path
        self.what = what


@dataclass(frozen=True)
class LPIPSUnavailable:
    """Why LPIPS cannot be computed; `str()` is the text a table cell shows instead of a number."""

    reason: str

    def __str__(self) -> str:
        return f"n/a: {self.reason}"


def torchvision_alexnet_path() -> Path:
    """Where torchvision caches ImageNet AlexNet: `torch.hub.get_dir()/checkpoints/<name>`.

    `torch.hub.get_dir()` honours $TORCH_HOME (default ~/.cache/torch/hub).
    """
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_CHECKPOINT_NAME


def default_alexnet_path() -> Path:
    """torchvision's AlexNet file when it exists, else the converted one (`dasrlib.pretrained`).

    The converted file's path is returned even when it is missing, so errors name the place
    ``python -m dasrlib.data fetch imagenet-features`` writes to.
    """
    from dasrlib.pretrained import ALEXNET_FILE, weights_dir

    torchvision_file = torchvision_alexnet_path()
    return torchvision_file if torchvision_file.is_file() else weights_dir() / ALEXNET_FILE


def lpips_linear_weights_path() -> Path:
    """The calibrated linear layers that ship inside the lpips package (v0.1, AlexNet)."""
    import lpips

    return Path(inspect.getfile(lpips)).parent / "weights" / "v0.1" / "alex.pth"


class LPIPSMetric:
    """LPIPS (Zhang et al. 2018), AlexNet trunk, v0.1 linear layers; lower is more similar.

    Inputs as for `psnr_y`; both images are 8-bit rounded, scaled to [-1, 1], and not cropped.
    `weights_path`: torchvision's ``alexnet-owt-7be5be79.pth`` or the converted
    ``imagenet-alexnet.safetensors``; None: `default_alexnet_path()`. Raises
    `LPIPSWeightsNotFound` (naming the path) when the AlexNet weights or the linear layers are
    missing; nothing is ever downloaded.
    """

    def __init__(
        self, *, weights_path: str | os.PathLike[str] | None = None, device: torch.device | str
    ) -> None:
        import lpips
        import torchvision

        alex_path = Path(weights_path) if weights_path is not None else default_alexnet_path()
        if not alex_path.is_file():
            raise LPIPSWeightsNotFound(alex_path, "ImageNet AlexNet weights")
        linear_path = lpips_linear_weights_path()
        if not linear_path.is_file():
            raise LPIPSWeightsNotFound(linear_path, "lpips v0.1 AlexNet linear layers")

        # pnet_rand=True makes lpips build torchvision's AlexNet with random weights (no download);
        # the ImageNet weights are then copied in from the file we checked above.
        with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=`
            warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
            model = lpips.LPIPS(
                net="alex", version="0.1", pretrained=False, pnet_rand=True, verbose=False
            )
        alexnet = torchvision.models.alexnet(weights=None)
        try:
            if alex_path.suffix == ".safetensors":  # converted features only (dasrlib.pretrained)
                from dasrlib.pretrained import load_converted

                state = load_converted(alex_path)
                features = {k[len("features.") :]: v for k, v in state.items() if "features." in k}
                alexnet.features.load_state_dict(features)
            else:
                alexnet.load_state_dict(
                    torch.load(alex_path, map_location="cpu", weights_only=True)
                )
        except RuntimeError as err:
            raise ValueError(f"{alex_path} is not a torchvision AlexNet checkpoint: {err}") from err
        for slice_ in (
            model.net.slice1,
            model.net.slice2,
            model.net.slice3,
            model.net.slice4,
            model.net.slice5,
        ):
            for index, layer in slice_.named_children():
                layer.load_state_dict(alexnet.features[int(index)].state_dict())
        linear_state = torch.load(linear_path, map_location="cpu", weights_only=True)
        required = {f"lin{i}.model.1.weight" for i in range(5)}
        missing = required - set(linear_state)
        if missing:
            raise ValueError(f"lpips linear weights {linear_path} lack {sorted(missing)}")
        model.load_state_dict(linear_state, strict=False)

        self.device = torch.device(device)
        self.model = model.eval().requires_grad_(False).to(self.device)
        self.alexnet_path = alex_path
        self.linear_path = linear_path

    def _to_input(self, img: ImageLike) -> torch.Tensor:
        u8 = to_uint8_rgb(img)
        t = torch.from_numpy(np.ascontiguousarray(u8)).permute(2, 0, 1)[None].float() / 255.0
        return (t * 2.0 - 1.0).to(self.device)

    @torch.no_grad()
    def __call__(self, sr: ImageLike, hr: ImageLike) -> float:
        a, b = self._to_input(sr), self._to_input(hr)
        if a.shape != b.shape:
            raise ValueError(f"SR shape {tuple(a.shape)} differs from HR shape {tuple(b.shape)}")
        return float(self.model(a, b).reshape(()))


def load_lpips(
    *, weights_path: str | os.PathLike[str] | None = None, device: torch.device | str
) -> LPIPSMetric | LPIPSUnavailable:
    """An `LPIPSMetric`, or an `LPIPSUnavailable` naming the missing file so tables can say n/a."""
    try:
        return LPIPSMetric(weights_path=weights_path, device=device)
    except LPIPSWeightsNotFound as err:
        logger.warning("LPIPS unavailable: %s", err)
        return LPIPSUnavailable(
            f"weights not found at {err.path} (get them: python -m dasrlib.data fetch "
            "imagenet-features)"
        )
