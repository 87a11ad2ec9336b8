"""Fig. 5 (Sec. 4.6): editing v by hand moves the output the expected way; Fig. 5's one home.

`fig5_edits` are the figure's four hand edits of v (blur scale up / down, noise level up / down),
`fig5_panels` super-resolves an image with the prediction and with each edit, and
`fig5_interactive` / `write_fig5` draw them (`dasrlib.viz.fig5_figure`). As a measurement,
`fig5_sweep` sweeps one setting of the predicted degradation (the first-stage blur sigmas, or the
first noise level) across a level's range, keeping every other slot of v_hat = P(lr), and
measures the high-frequency energy of the SR output (`high_frequency_energy`). `fig5_check` runs
the blur and the noise sweep for a notebook's model and sets what the model does beside the paper
(blur up -> sharper, noise up -> smoother). The slider widget that edits v by hand is
`dasrlib.interactive`; editing v by physical values is `dasrlib.degradation.edit`.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dasrlib.degradation.edit import as_vector, edit_vector, physical_range
from dasrlib.degradation.levels import Level
from dasrlib.degradation.vector import SLOTS, Slot, decode_vector
from dasrlib.inference import predict_vector, upscale
from dasrlib.io import LoadedImage
from dasrlib.results import project_path
from dasrlib.viz import fig5_figure, fig5_sweep_figure

if TYPE_CHECKING:
    from dasrlib.models.loading import ModelChoice

__all__ = [
    "FIG5_EXPECTED",
    "fig5_check",
    "fig5_edits",
    "fig5_interactive",
    "fig5_panels",
    "fig5_sweep",
    "high_frequency_energy",
    "luma_laplacian",
    "portable_label",
    "write_fig5",
]

logger = logging.getLogger(__name__)


def _slot(name: str) -> Slot:
    return next(slot for slot in SLOTS if slot.name == name)


# --------------------------------------------------------------------------------------------
# Fig. 5 itself: the automatic result and four hand edits of v
# --------------------------------------------------------------------------------------------


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
    decoded = decode_vector(as_vector(v).cpu(), level=level)
    assert isinstance(decoded, dict)
    sigma_lo, sigma_hi = physical_range("blur1_sigma_x", level=level)
    noise_type = str(decoded.get("noise1_type", "none"))
    noise_lo, noise_hi = physical_range("noise1_level", level=level, noise_type=noise_type)
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


def fig5_panels(
    model: nn.Module,
    image: Tensor,
    *,
    level: Level | str = Level.SEVERE,
    precision: str = "fp32",
) -> list[tuple[str, Tensor]]:
    """Fig. 5's panels (Sec. 4.6): (title, image [3, sH, sW] in [0, 1]) for (a) the LR input
    (nearest), (b) automatic (v_hat = P(lr)), (c) / (d) blur scale up / down, (e) / (f) noise
    level up / down; the edits are `fig5_edits` (the first-stage blur sigmas and noise level set
    to the ends of ``level``'s ranges).

    Args:
        model: a DASR model.
        image: LR image [3, H, W] in [0, 1].
    """
    lr = image.detach().float().cpu()
    if lr.ndim != 3 or lr.shape[0] != 3:
        raise ValueError(f"image must be [3, H, W], got {tuple(image.shape)}")
    v_hat = predict_vector(lr, model, precision=precision)
    scale = int(model.scale)
    nearest = F.interpolate(lr[None], scale_factor=scale, mode="nearest")[0]
    panels = [(f"(a) LR x{scale} (nearest)", nearest)]
    panels.append(("(b) automatic", upscale(lr, model, v=v_hat, precision=precision)))
    for letter, (title, edits) in zip("cdef", fig5_edits(v_hat, level=level).items(), strict=True):
        v = edit_vector(v_hat, edits, level=level)
        sr = upscale(lr, model, v=v, precision=precision)
        panels.append((f"({letter}) " + title.replace(": ", "\n"), sr))
    return panels


def fig5_interactive(
    model: nn.Module,
    image: Tensor,
    out_png: str | os.PathLike[str],
    *,
    level: Level | str = Level.SEVERE,
    crop: tuple[int, int, int] | None = None,
    precision: str = "fp32",
    dpi: int = 100,
) -> Path:
    """Fig. 5 (Sec. 4.6): `fig5_panels` drawn by `dasrlib.viz.fig5_figure` to ``out_png``
    (written atomically); ``crop``: (top, left, size) of the zoomed region in LR pixels, None:
    centred."""
    panels = fig5_panels(model, image, level=level, precision=precision)
    return fig5_figure(panels, out_png, scale=int(model.scale), crop=crop, dpi=dpi)


def write_fig5(
    choice: ModelChoice,
    image: LoadedImage,
    out_png: str | os.PathLike[str] | None,
    *,
    level: Level | str = Level.SEVERE,
    allow_random: bool = False,
    precision: str = "fp32",
) -> Path | None:
    """Write the Fig. 5 figure (`fig5_interactive`) for ``image``; a relative path
    is taken from the repository root. A random-weight model's figure is not written unless
    ``allow_random`` (it would only show noise where the paper shows an effect); returns None
    then, or when ``out_png`` is None."""
    if out_png is None:
        return None
    if choice.random and not allow_random:
        logger.warning("Fig. 5 not written to %s: the model has random weights", out_png)
        return None
    return fig5_interactive(
        choice.model, image.rgb, project_path(out_png), level=level, precision=precision
    )


# --------------------------------------------------------------------------------------------
# Fig. 5 as a measurement: does a setting sharpen or smooth the output?
# --------------------------------------------------------------------------------------------

FIG5_EXPECTED: dict[str, str] = {"blur": "sharper", "noise": "smoother"}
"""The paper as a setting rises (Fig. 5): blur up -> sharper output, noise up -> smoother."""

_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def luma_laplacian(image: Tensor) -> Tensor:
    """The 3x3 Laplacian of the luma (BT.601 weights, [0, 1] scale) of an image [3, H, W] in
    [0, 1]: [H - 2, W - 2] (borders excluded), CPU float32; large where there is fine detail."""
    if image.ndim != 3 or image.shape[0] < 3:
        raise ValueError(f"image must be [3, H, W], got {tuple(image.shape)}")
    weights = torch.tensor([65.481, 128.553, 24.966]) / 255.0
    luma = (image[:3].detach().float().cpu() * weights[:, None, None]).sum(0)
    return F.conv2d(luma[None, None], _LAPLACIAN[None, None])[0, 0]


def high_frequency_energy(image: Tensor) -> float:
    """Mean squared `luma_laplacian` of an image [3, H, W] in [0, 1]: sharper images give larger
    values."""
    return float(luma_laplacian(image).pow(2).mean())


def fig5_sweep(
    model: nn.Module,
    image: Tensor,
    *,
    setting: str,
    steps: int = 7,
    level: Level | str = Level.SEVERE,
    precision: str = "fp32",
) -> pd.DataFrame:
    """Sweep one Fig. 5 setting across ``level``'s range and measure the output (Sec. 4.6).

    ``setting``: "blur" (both first-stage blur sigmas, px) or "noise" (first noise level, in the
    units of the predicted noise type; Gaussian when none is predicted). Every other slot keeps
    v_hat = P(lr). Returns one row per value: setting, value, hf_energy
    (`high_frequency_energy` of the SR output) and relative (hf_energy over that of the
    automatic result); ``attrs["rank_correlation"]`` is the Spearman correlation of value and
    energy (+1: raising the setting always sharpens, -1: always smooths) and ``attrs["change"]``
    the energy at the highest setting over that at the lowest, minus 1.
    """
    if setting not in FIG5_EXPECTED:
        raise ValueError(f"setting must be one of {sorted(FIG5_EXPECTED)}, got {setting!r}")
    if steps < 2:
        raise ValueError(f"steps must be at least 2, got {steps}")
    level = Level(level)
    lr = image.detach().float().cpu()
    v_hat = predict_vector(lr, model, precision=precision)
    decoded = decode_vector(v_hat, level=level)
    assert isinstance(decoded, dict)
    noise_type = str(decoded.get("noise1_type", "none"))
    if setting == "blur":
        low, high = _slot("blur1_sigma_x").ranges[level]
    else:
        slot = _slot("noise1_level")
        low, high = (slot.poisson_ranges if noise_type == "poisson" else slot.ranges)[level]
    automatic = high_frequency_energy(upscale(lr, model, v=v_hat, precision=precision))
    rows = []
    for value in torch.linspace(low, high, steps).tolist():
        edits: dict[str, float | str]
        if setting == "blur":
            edits = {"blur1_sigma_x": value, "blur1_sigma_y": value}
        else:
            edits = {"noise1_level": value}
            if noise_type == "none":
                edits["noise1_type"] = "gaussian"
        sr = upscale(lr, model, v=edit_vector(v_hat, edits, level=level), precision=precision)
        energy = high_frequency_energy(sr)
        relative = energy / automatic
        rows.append({"setting": setting, "value": value, "hf_energy": energy, "relative": relative})
    table = pd.DataFrame(rows)
    table.attrs["rank_correlation"] = float(table["value"].rank().corr(table["hf_energy"].rank()))
    table.attrs["change"] = float(table["hf_energy"].iloc[-1] / table["hf_energy"].iloc[0] - 1.0)
    table.attrs["noise_type"] = noise_type if noise_type != "none" else "gaussian"
    return table


def fig5_check(
    choice: ModelChoice,
    image: LoadedImage,
    out_png: str | os.PathLike[str] | None,
    *,
    steps: int = 7,
    level: Level | str = Level.SEVERE,
    allow_random: bool = False,
    precision: str = "fp32",
) -> pd.DataFrame:
    """Fig. 5 as a check (Sec. 4.6): `fig5_sweep` of blur and of noise, one row per setting with
    the paper's expectation and what the model does; the curves go to ``out_png``
    (`dasrlib.viz.fig5_sweep_figure`; relative: from the repository root) unless it is None or
    the model has random weights (then only with ``allow_random``)."""
    sweeps = {
        setting: fig5_sweep(
            choice.model, image.rgb, setting=setting, steps=steps, level=level, precision=precision
        )
        for setting in FIG5_EXPECTED
    }
    summary = pd.DataFrame(
        [
            {
                "setting": setting,
                "paper (Fig. 5)": f"raising it gives a {FIG5_EXPECTED[setting]} output",
                "rank correlation (value, HF energy)": round(table.attrs["rank_correlation"], 3),
                "HF energy, lowest -> highest setting (x automatic)": (
                    f"{table['relative'].iloc[0]:.3f} -> {table['relative'].iloc[-1]:.3f}"
                ),
                "model does": _direction(table),
            }
            for setting, table in sweeps.items()
        ]
    )
    if out_png is not None:
        if choice.random and not allow_random:
            logger.warning("Fig. 5 sweep not written to %s: the model has random weights", out_png)
        else:
            source = portable_label(choice.source)
            title = source
            if choice.local_run:
                title = f"local run {source} (not a published model)"
            elif choice.random:
                title = f"RANDOM-WEIGHT model ({source[:60]}...)"
            fig5_sweep_figure(sweeps, project_path(out_png), title=title)
    return summary


_ABSOLUTE_PATH = re.compile(r"(?<![\w.])/[^\s'\"(),;]+")


def portable_label(text: str) -> str:
    """`text` with each absolute path in it made portable, for a committed figure's title.

    A path inside the repository becomes relative to its root
    (``results/runs/x/model.safetensors``); any other path keeps only its folder and file name
    (``x/model.safetensors``), so no title names a folder of the machine that drew it.
    """
    root = project_path(".").resolve()

    def portable(match: re.Match[str]) -> str:
        path = Path(match.group(0))
        try:
            return path.resolve().relative_to(root).as_posix()
        except ValueError:
            return Path(path.parent.name, path.name).as_posix()

    return _ABSOLUTE_PATH.sub(portable, text)


def _direction(table: pd.DataFrame) -> str:
    rho, change = table.attrs["rank_correlation"], table.attrs["change"]
    if abs(change) < 1e-3:
        return "no change (under 0.1 %)"
    word = "sharper" if rho > 0 else "smoother"
    return f"{word} as it rises ({100 * change:+.1f} % HF energy)"
