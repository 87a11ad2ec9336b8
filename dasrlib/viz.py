"""Figures of the paper, written as PNG files (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dasrlib.degradation.levels import Level
from dasrlib.degradation.pipeline import degrade
from dasrlib.io import atomic_write

__all__ = [
    "centre_crop_box",
    "comparison_figure",
    "fig2_levels",
    "fig4_grid",
    "fig5_figure",
    "fig5_sweep_figure",
    "method_rows_figure",
    "training_curves",
    "training_example_figure",
]


def _figure_module() -> ModuleType:
    """matplotlib.pyplot with the Agg backend, imported on first use."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save_png(fig: object, out_png: str | os.PathLike[str]) -> Path:
    """Write `fig` to `out_png` atomically as PNG, close it (also on error), return the path."""
    out = Path(out_png)
    try:
        with atomic_write(out) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        _figure_module().close(fig)
    return out


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
    return _save_png(fig, out_png)


# --------------------------------------------------------------------------------------------
# Fig. 5: user-interactive super-resolution (Sec. 4.6)
# --------------------------------------------------------------------------------------------


def centre_crop_box(height: int, width: int, *, size: int = 48) -> tuple[int, int, int]:
    """(top, left, size) of a centred square of at most `size` LR pixels, for zoomed panels.

    The square is at most half the shorter side, so a zoomed row shows a real crop even of a
    small image (a 32-pixel LR validation crop gets a 16-pixel square, not the whole image).
    """
    side = max(1, min(size, height // 2, width // 2))
    return (height - side) // 2, (width - side) // 2, side


def comparison_figure(
    panels: list[tuple[str, Tensor]],
    *,
    scale: int,
    crop: tuple[int, int, int] | None = None,
    dpi: int = 100,
) -> object:
    """A matplotlib Figure: SR results side by side (top row) and a zoomed crop of each (bottom).

    Args:
        panels: (title, image [3, sH, sW] in [0, 1]) at the output size; the LR input belongs
            here enlarged with nearest-neighbour sampling.
        scale: SR scale (converts the LR crop box to output pixels).
        crop: (top, left, size) in LR pixels; None: `centre_crop_box` of the image.
    """
    if not panels:
        raise ValueError("comparison_figure needs at least one panel")
    height, width = panels[0][1].shape[-2:]
    for title, image in panels:
        if image.shape[-2:] != (height, width):
            raise ValueError(
                f"panel {title!r} is {tuple(image.shape)}, expected size {(height, width)}"
            )
    top, left, side = crop if crop is not None else centre_crop_box(height // scale, width // scale)
    box = (scale * top, scale * left, scale * side)
    plt = _figure_module()
    columns = len(panels)
    fig, axes = plt.subplots(
        2, columns, figsize=(2.6 * columns, 2.6 * height / width + 2.9), dpi=dpi, squeeze=False
    )
    for column, (title, image) in enumerate(panels):
        full, zoom = axes[0][column], axes[1][column]
        full.imshow(_to_hwc(image[:3]), interpolation="nearest")
        full.add_patch(
            plt.Rectangle((box[1], box[0]), box[2], box[2], fill=False, edgecolor="red", lw=1)
        )
        full.set_title(title, fontsize=9)
        zoom.imshow(
            _to_hwc(image[:3, box[0] : box[0] + box[2], box[1] : box[1] + box[2]]),
            interpolation="nearest",
        )
        for ax in (full, zoom):
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return fig


def method_rows_figure(
    rows: Sequence[tuple[str, Mapping[str, Tensor | None]]],
    out_png: str | os.PathLike[str],
    *,
    suptitle: str,
    missing: Mapping[str, str] | None = None,
    panel_inches: float = 1.9,
    dpi: int = 100,
) -> Path:
    """One row per image, one column per method: crops [3, h, w] in [0, 1], all of one size,
    drawn pixel for pixel (nearest). A None panel is a method that could not run: grey, with
    ``missing[method]`` (e.g. "weights not found") written on it. Written atomically."""
    if not rows:
        raise ValueError("method_rows_figure needs at least one row")
    columns = list(rows[0][1])
    plt = _figure_module()
    fig, axes = plt.subplots(
        len(rows),
        len(columns),
        figsize=(panel_inches * len(columns), panel_inches * len(rows) + 0.5),
        dpi=dpi,
        squeeze=False,
    )
    for r, (name, panels) in enumerate(rows):
        for c, method in enumerate(columns):
            ax, image = axes[r][c], panels[method]
            if image is None:
                ax.set_facecolor("0.85")
                reason = (missing or {}).get(method, "not available")
                ax.text(0.5, 0.5, reason, ha="center", va="center", fontsize=7, wrap=True)
            else:
                ax.imshow(_to_hwc(image[:3]), interpolation="nearest")
            if r == 0:
                ax.set_title(method, fontsize=9)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return _save_png(fig, out_png)


def fig5_figure(
    panels: list[tuple[str, Tensor]],
    out_png: str | os.PathLike[str],
    *,
    scale: int,
    crop: tuple[int, int, int] | None = None,
    dpi: int = 100,
) -> Path:
    """Fig. 5 drawn (Sec. 4.6): the panels of `dasrlib.experiments.fig5.fig5_panels` side by
    side with a zoomed crop of each (`comparison_figure`), written atomically to ``out_png``.

    Args:
        panels: (title, image [3, sH, sW] in [0, 1]) at the output size.
        scale: SR scale (converts the LR crop box to output pixels).
        crop: (top, left, size) of the zoomed region in LR pixels; None: centred.
    """
    fig = comparison_figure(panels, scale=scale, crop=crop, dpi=dpi)
    fig.suptitle("User-interactive SR: editing the predicted degradation (Fig. 5)", fontsize=10)
    fig.tight_layout(rect=(0.0, 0.0, 1.0, 0.94))
    return _save_png(fig, out_png)


# --------------------------------------------------------------------------------------------
# Fig. 4: ablations (Sec. 4.5)
# --------------------------------------------------------------------------------------------


def fig4_grid(
    lr: Tensor,
    outputs: Mapping[str, Tensor],
    out_png: str | os.PathLike[str],
    *,
    titles: Mapping[str, str] | None = None,
    suptitle: str = "Ablations (Fig. 4)",
    columns: int = 3,
    dpi: int = 100,
) -> Path:
    """Fig. 4: the same real LR image super-resolved by each ablation variant, in a grid.

    The first panel is the LR input enlarged with nearest-neighbour sampling to the SR size;
    the others follow the order of `outputs`.

    Args:
        lr: LR image [3, h, w] (or [1, 3, h, w]) in [0, 1].
        outputs: {variant name: SR [3, sh, sw] in [0, 1]}, all of one size, s an integer factor.
        out_png: output path (written atomically).
        titles: panel titles by variant name
            (``dasrlib.experiments.ablations.FIG4_TITLES``); default: names.

    Returns:
        The path written.
    """
    image = lr.detach().float().cpu()
    image = image[0] if image.ndim == 4 and image.shape[0] == 1 else image
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"lr must be [3, h, w] or [1, 3, h, w], got {tuple(lr.shape)}")
    if not outputs:
        raise ValueError("fig4_grid needs at least one variant output")
    if columns <= 0:
        raise ValueError(f"columns must be positive, got {columns}")
    height, width = next(iter(outputs.values())).shape[-2:]
    scale = height // image.shape[-2]
    if scale < 1 or (height, width) != (scale * image.shape[-2], scale * image.shape[-1]):
        raise ValueError(
            f"SR size {(height, width)} is not an integer multiple of the LR size "
            f"{tuple(image.shape[-2:])}"
        )
    nearest = torch.repeat_interleave(torch.repeat_interleave(image, scale, -2), scale, -1)
    panels = [(f"LR input (x{scale} nearest)", nearest)]
    for name, sr in outputs.items():
        if sr.ndim != 3 or tuple(sr.shape) != (3, height, width):
            raise ValueError(
                f"output {name!r} is {tuple(sr.shape)}, expected (3, {height}, {width})"
            )
        panels.append(((titles or {}).get(name, name), sr.detach().float().cpu()))

    plt = _figure_module()
    rows = -(-len(panels) // columns)
    panel_w = 3.0
    fig, axes = plt.subplots(
        rows,
        columns,
        figsize=(columns * panel_w, rows * (panel_w * height / width + 0.35) + 0.4),
        dpi=dpi,
        squeeze=False,
    )
    for index, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if index >= len(panels):
            ax.axis("off")
            continue
        title, img = panels[index]
        ax.imshow(_to_hwc(img), interpolation="nearest")
        ax.set_title(title, fontsize=9)
    fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return _save_png(fig, out_png)


# --------------------------------------------------------------------------------------------
# Training runs (dasrlib.train): loss curves and a held-out example
# --------------------------------------------------------------------------------------------


def training_curves(
    run_dir: str | os.PathLike[str], out_png: str | os.PathLike[str] | None = None
) -> Path:
    """Loss terms of ``metrics.csv`` (log scale) and validation PSNR-Y of ``val.csv`` per level
    against bicubic, side by side; written to ``<run_dir>/training_curves.png`` by default."""
    import pandas as pd

    run_dir = Path(run_dir)
    out = Path(out_png) if out_png is not None else run_dir / "training_curves.png"
    metrics = pd.read_csv(run_dir / "metrics.csv")
    val_path = run_dir / "val.csv"
    val = pd.read_csv(val_path) if val_path.is_file() else None
    plt = _figure_module()
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    for column in [c for c in metrics.columns if c.startswith("loss_")]:
        values = metrics[column].where(metrics[column] > 0)
        ax_loss.plot(metrics["iteration"], values, label=column[len("loss_") :], lw=1)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("loss (mean over the log interval)")
    ax_loss.legend(fontsize=8)
    ax_loss.grid(alpha=0.3)
    if val is not None and len(val):
        for index, (level, rows) in enumerate(val.groupby("level", sort=False)):
            colour = f"C{index}"
            ax_val.plot(rows["iteration"], rows["psnr_y_db"], "o-", color=colour, label=level)
            ax_val.plot(rows["iteration"], rows["bicubic_psnr_y_db"], "x--", color=colour, lw=1)
        ax_val.set_xlabel("iteration")
        ax_val.set_ylabel("PSNR-Y (dB); dashed: bicubic")
        ax_val.legend(fontsize=8)
        ax_val.grid(alpha=0.3)
    else:
        ax_val.set_axis_off()
    fig.suptitle(run_dir.name, fontsize=10)
    fig.tight_layout()
    return _save_png(fig, out)


def training_example_figure(
    example: Mapping[str, object], out_png: str | os.PathLike[str], *, scale: int = 4
) -> Path:
    """LR (nearest) / bicubic / SR / HR of one held-out image, as returned by
    `dasrlib.train.validation.validation_example`, with PSNR-Y in the titles."""
    lr = example["lr"]
    assert isinstance(lr, Tensor)
    enlarged = F.interpolate(lr[None], scale_factor=scale, mode="nearest")[0]
    panels = [
        (f"LR ({example['level']})", enlarged),
        (f"bicubic {example['bicubic_psnr_y_db']:.2f} dB", example["bicubic"]),
        (f"SR {example['psnr_y_db']:.2f} dB", example["sr"]),
        ("HR", example["hr"]),
    ]
    fig = comparison_figure(panels, scale=scale)  # type: ignore[arg-type]
    return _save_png(fig, out_png)


def fig5_sweep_figure(
    sweeps: Mapping[str, object], out_png: str | os.PathLike[str], *, title: str = ""
) -> Path:
    """Fig. 5 as curves (Sec. 4.6): high-frequency energy of the SR output, relative to the
    automatic result, as each setting sweeps its range (``dasrlib.experiments.fig5.fig5_sweep``
    tables, keyed by setting). The paper: blur up -> sharper (rising), noise up -> smoother."""
    expected = {"blur": "rising (sharper)", "noise": "falling (smoother)"}
    units = {"blur": "blur sigma_x = sigma_y (px)", "noise": "noise level"}
    plt = _figure_module()
    fig, axes = plt.subplots(1, len(sweeps), figsize=(4.8 * len(sweeps), 3.6), dpi=100)
    axes = np.atleast_1d(axes)
    for ax, (setting, table) in zip(axes, sweeps.items(), strict=True):
        percent = 100.0 * (table["relative"] - 1.0)
        ax.plot(table["value"], percent, "o-")
        ax.axhline(0.0, color="grey", lw=1, ls="--")
        ax.ticklabel_format(axis="y", useOffset=False, style="sci", scilimits=(-3, 4))
        rho = table.attrs.get("rank_correlation", float("nan"))
        change = 100.0 * table.attrs.get("change", float("nan"))
        ax.set_title(
            f"{setting}: paper {expected.get(setting, '?')}\n"
            f"measured: {change:+.1f} % from lowest to highest, rank corr. {rho:+.2f}",
            fontsize=9,
        )
        unit = units.get(setting, setting)
        if setting == "noise":
            unit = f"{table.attrs.get('noise_type', 'gaussian')} {unit}"
        ax.set_xlabel(unit)
        ax.set_ylabel("HF energy of SR vs automatic (%)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"Fig. 5 check: {title}" if title else "Fig. 5 check", fontsize=9)
    fig.tight_layout()
    return _save_png(fig, out_png)
