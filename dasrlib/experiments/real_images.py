"""Real-world inputs side by side (Sec. 4.4): crops of real LR photos super-resolved by several
methods, one row per photo.

Real photos have no ground truth, so this is a qualitative comparison: bicubic, Real-ESRGAN,
SRResNet and DASR on RealSRSet (the optional external data folder named by
`REAL_IMAGES_FOLDER`: put the RealSRSet PNGs there). Each row takes the most textured square of
its photo (largest mean absolute Laplacian on a half-overlapping grid), super-resolves it with a
margin of context (cut away after) and shows it beside the LR crop enlarged by nearest sampling.
A method whose weights are missing gets a column saying so, not a silent gap.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from dasrlib.data import list_image_files
from dasrlib.device import resolve_device
from dasrlib.experiments.fig5 import luma_laplacian
from dasrlib.io import read_image
from dasrlib.methods import WEIGHTS_PREFIX, MethodSpec, load_upscaler, method_from_spec
from dasrlib.pretrained import REALESRGAN_FILE
from dasrlib.results import project_path
from dasrlib.viz import method_rows_figure

__all__ = [
    "DEFAULT_METHODS",
    "DEFAULT_NAMES",
    "REAL_IMAGES_FOLDER",
    "most_textured_crop",
    "real_image_rows",
    "write_real_image_figure",
]

logger = logging.getLogger(__name__)

REAL_IMAGES_FOLDER = "../shared/data/eval/real/RealSRSet"
"""Where the real LR photos are looked for (relative: from the repository root); an optional
external data folder, absent from a plain clone."""

DEFAULT_METHODS: dict[str, MethodSpec] = {
    "bicubic": "bicubic",
    "Real-ESRGAN": f"{WEIGHTS_PREFIX}{REALESRGAN_FILE}",
    "SRResNet": "results/models/srresnet/model.safetensors",
    "DASR": "results/models/dasr/model.safetensors",
}
"""Column title -> method spec (`dasrlib.methods.method_from_spec`): the published models of the
training campaign and Real-ESRGAN from ``python -m dasrlib.data fetch realesrgan``."""

DEFAULT_NAMES = ("Lincoln", "oldphoto2", "comic1", "dped_crop00061", "building")
"""The rows by default: an old print, an old photo, a JPEG comic, a phone photo, a noisy scene."""

_THIRD_PARTY = ("Real-ESRGAN",)
_SCALE = 4


def most_textured_crop(image: Tensor, side: int) -> tuple[int, int]:
    """(top, left) of the ``side`` x ``side`` square of ``image`` [3, H, W] with the largest mean
    absolute Laplacian of its luma, on a grid of half-overlapping positions (deterministic)."""
    height, width = image.shape[-2:]
    if height < side or width < side:
        raise ValueError(f"image of {width}x{height} pixels is smaller than a {side}-pixel crop")
    energy = F.pad(luma_laplacian(image).abs(), (1, 1, 1, 1))  # back to image coordinates
    stride = max(1, side // 2)
    scores = F.avg_pool2d(energy[None, None], side, stride=stride)[0, 0]
    row, column = divmod(int(scores.argmax()), scores.shape[1])
    return row * stride, column * stride


def _crop_with_margin(
    image: Tensor, top: int, left: int, side: int, margin: int
) -> tuple[Tensor, tuple[int, int]]:
    """The crop grown by up to ``margin`` pixels of context per side, and where the crop starts
    inside it."""
    height, width = image.shape[-2:]
    y0, x0 = max(0, top - margin), max(0, left - margin)
    y1, x1 = min(height, top + side + margin), min(width, left + side + margin)
    return image[:3, y0:y1, x0:x1], (top - y0, left - x0)


def real_image_rows(
    paths: Sequence[Path],
    methods: Mapping[str, MethodSpec],
    *,
    crop: int = 48,
    margin: int = 16,
    device: str | torch.device = "auto",
) -> tuple[list[tuple[str, dict[str, Tensor | None]]], dict[str, str]]:
    """For each photo: (its name, {"LR (nearest)" and each method: SR crop [3, 4c, 4c] or None})
    and {method: why it is missing} for the methods that could not run."""
    target = resolve_device(device)
    upscalers, missing = {}, {}
    for title, spec in methods.items():
        method = method_from_spec(title, spec, third_party=_THIRD_PARTY)
        if method is None:
            missing[title] = "not given"
            continue
        try:
            upscalers[title] = load_upscaler(method, device=target)
        except FileNotFoundError as error:
            missing[title] = str(error)
            logger.warning("real-image figure: %s: %s", title, error)
    rows = []
    for path in paths:
        lr = read_image(path).rgb
        top, left = most_textured_crop(lr, crop)
        context, (dy, dx) = _crop_with_margin(lr, top, left, crop, margin)
        panels: dict[str, Tensor | None] = {
            "LR (nearest)": lr[:3, top : top + crop, left : left + crop]
            .repeat_interleave(_SCALE, 1)
            .repeat_interleave(_SCALE, 2)
        }
        for title in methods:
            if title not in upscalers:
                panels[title] = None
                continue
            with torch.inference_mode():
                sr, _ = upscalers[title](context[None].to(target))
            y, x, size = _SCALE * dy, _SCALE * dx, _SCALE * crop
            panels[title] = sr[0, :, y : y + size, x : x + size].float().cpu()
        rows.append((path.stem, panels))
    return rows, missing


def write_real_image_figure(
    out_png: str | os.PathLike[str],
    *,
    folder: str | os.PathLike[str] = REAL_IMAGES_FOLDER,
    methods: Mapping[str, MethodSpec] = DEFAULT_METHODS,
    names: Sequence[str] | None = DEFAULT_NAMES,
    crop: int = 48,
    device: str | torch.device = "auto",
    suptitle: str = "Real LR photos (RealSRSet), x4",
) -> Path | None:
    """Draw `real_image_rows` of the photos in ``folder`` whose stems are ``names`` (None: all of
    them, in name order) into ``out_png`` (relative paths: from the repository root). None, with
    a log line, when the folder does not exist."""
    root = project_path(folder)
    if not root.is_dir():
        logger.info("real-image figure skipped: no folder %s (optional external data)", folder)
        return None
    paths = list_image_files(root)
    if names is not None:
        by_stem = {path.stem: path for path in paths}
        unknown = [name for name in names if name not in by_stem]
        if unknown:
            raise FileNotFoundError(f"{root}: no image named {', '.join(unknown)}")
        paths = [by_stem[name] for name in names]
    rows, missing = real_image_rows(paths, methods, crop=crop, device=device)
    notes = {
        title: f"weights not found:\n{methods[title]}" if methods[title] else "no weights given"
        for title in missing
    }
    return method_rows_figure(rows, project_path(out_png), suptitle=suptitle, missing=notes)
