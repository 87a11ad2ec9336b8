"""What a budget draws with the models it is about to publish: the real-photo comparison
(Sec. 4.4) and, once DASR exists, Fig. 5 as a measurement (Sec. 4.6).

`draw_budget_figures` writes them into the campaign's work folder during the evaluation window
(so the next budget reserves time for them); `dasrlib.campaign.publish` copies them beside the
weights. A figure that cannot be drawn is logged and left out; it never costs a budget.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch

from dasrlib.data import list_image_files, load_photo
from dasrlib.experiments.fig5 import fig5_check
from dasrlib.experiments.real_images import (
    DEFAULT_METHODS,
    DEFAULT_NAMES,
    write_real_image_figure,
)
from dasrlib.methods import MethodSpec
from dasrlib.models.checkpoints import CheckpointError, load_model
from dasrlib.models.loading import ModelChoice, ModelKind

__all__ = ["FIG5_IMAGE", "FIGURE_FILES", "REAL_IMAGES_SUBFOLDER", "draw_budget_figures"]

logger = logging.getLogger(__name__)

REAL_IMAGES_SUBFOLDER = "real/RealSRSet"
"""The real LR photos, under the campaign's ``eval_root`` (optional external data)."""

FIG5_IMAGE = "chelsea"
"""The embedded photo the Fig. 5 sweep degrades (96 pixels on its longest side)."""

FIGURE_FILES = ("real_images.png", "fig5_sweep.png", "fig5_sweep.csv")
"""Every file `draw_budget_figures` may publish; one a budget did not draw is removed, so that no
figure shows older models than the weights beside it."""

_FIGURE_ERRORS = (OSError, ValueError, RuntimeError, CheckpointError)


def draw_budget_figures(
    models: Mapping[str, Path], eval_root: Path, out_dir: Path, *, device: torch.device
) -> dict[str, Path]:
    """{published file name: file in ``out_dir``} of the figures ``models`` ({"srresnet": path,
    "dasr": path}, either may be missing) allow: ``real_images.png`` (bicubic, Real-ESRGAN,
    SRResNet, DASR on RealSRSet crops) and, with a DASR, ``fig5_sweep.png`` / ``.csv``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    drawn: dict[str, Path] = {}
    methods: dict[str, MethodSpec] = {
        **DEFAULT_METHODS,  # bicubic and Real-ESRGAN; the campaign's own models instead of these:
        "SRResNet": str(models["srresnet"]) if "srresnet" in models else None,
        "DASR": str(models["dasr"]) if "dasr" in models else None,
    }
    folder = eval_root / REAL_IMAGES_SUBFOLDER
    present = {path.stem for path in list_image_files(folder)} if folder.is_dir() else set()
    names = [name for name in DEFAULT_NAMES if name in present] or None  # None: every photo
    try:
        real = write_real_image_figure(
            out_dir / "real_images.png", folder=folder, methods=methods, names=names, device=device
        )
        if real is not None:
            drawn["real_images.png"] = real
    except _FIGURE_ERRORS as error:
        logger.warning("real-image figure not drawn: %s", error)
    if "dasr" in models:
        try:
            model = load_model(models["dasr"], device=device)
            choice = ModelChoice(model, str(models["dasr"]), ModelKind.PUBLISHED)
            image = load_photo(FIG5_IMAGE, max_side=96)
            summary = fig5_check(choice, image, out_dir / "fig5_sweep.png")
            summary.to_csv(out_dir / "fig5_sweep.csv", index=False)
            drawn["fig5_sweep.png"] = out_dir / "fig5_sweep.png"
            drawn["fig5_sweep.csv"] = out_dir / "fig5_sweep.csv"
        except _FIGURE_ERRORS as error:
            logger.warning("Fig. 5 sweep not drawn: %s", error)
    return drawn
