"""Figures of the paper, written as PNG files (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import Tensor

from dasrlib.degradation import Level, degrade
from dasrlib.io import atomic_write

__all__ = ["fig2_levels"]


def _figure_module() -> ModuleType:
    """matplotlib.pyplot with the Agg backend, imported on first use."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _to_hwc(img: Tensor) -> np.ndarray:
    return img.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def _caption(params: dict) -> str:
    """A short physical summary of one degradation (blur sigma, noise, JPEG quality)."""
    parts = []
    if "blur1_sigma_x" in params:
        parts.append(f"blur {params['blur1_sigma_x']:.1f}/{params['blur1_sigma_y']:.1f}px")
    if "noise1_level" in params:
        unit = "sigma" if params["noise1_type"] == "gaussian" else "poisson"
        parts.append(f"{unit} {params['noise1_level']:.2g}")
    if "jpeg1_quality" in params:
        parts.append(f"q {params['jpeg1_quality']:.0f}")
    if params.get("jpeg2_applied"):
        parts.append(f"q2 {params['jpeg2_quality']:.0f}")
    return "\n".join([", ".join(parts[:2]), ", ".join(parts[2:])]) if parts else "x4 bicubic"


def fig2_levels(
    hr_crop: Tensor,
    out_png: str | os.PathLike[str],
    *,
    seed: int = 0,
    scale: int = 4,
    dpi: int = 100,
) -> Path:
    """Fig. 2: one HR crop degraded at each level (bicubic, weak, standard, severe).

    LR images are shown enlarged with nearest-neighbour sampling to the HR size, with the drawn
    parameters under each panel. Degradation runs on the CPU with a generator seeded by `seed`.

    Args:
        hr_crop: [3, H, W] or [1, 3, H, W] in [0, 1]; H and W divisible by `scale`.
        out_png: output path (written atomically).
        seed: generator seed (one generator per level, each seeded with `seed`).

    Returns:
        The path written.
    """
    hr = hr_crop.detach().float().cpu()
    hr = hr[None] if hr.ndim == 3 else hr
    if hr.ndim != 4 or hr.shape[:2] != (1, 3):
        raise ValueError(f"hr_crop must be [3, H, W] or [1, 3, H, W], got {tuple(hr_crop.shape)}")
    panels = [("HR", hr[0], "")]
    for level in Level:
        generator = torch.Generator().manual_seed(seed)
        lr, record = degrade(hr, level, generator=generator, scale=scale)
        upscaled = torch.nn.functional.interpolate(lr, scale_factor=scale, mode="nearest")[0]
        panels.append((f"{level.value} (LR x{scale})", upscaled, _caption(record.to_dicts()[0])))

    plt = _figure_module()
    height, width = hr.shape[-2:]
    fig_w = len(panels) * 2.4
    fig, axes = plt.subplots(1, len(panels), figsize=(fig_w, 2.4 * height / width + 0.8), dpi=dpi)
    for ax, (title, img, caption) in zip(axes, panels, strict=True):
        ax.imshow(_to_hwc(img), interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(caption, fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("DASR degradation levels (Fig. 2)", fontsize=10)
    fig.tight_layout()
    out = Path(out_png)
    with atomic_write(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out
