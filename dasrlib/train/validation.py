"""Validation on held-out images during training, and reading a run's validation back.

A seeded share of the HR images (`DataSection.val_images`) is held out of training; each is centre
cropped and degraded once per level with a generator seeded from (seed, image, level), so the
validation set is the same across runs, resumes and devices. The loop validates the EMA model;
`validation_summary` and `validation_example` read a finished run folder back.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dasrlib.data import ImageList, UnusableDataError, open_hr_images, split_holdout
from dasrlib.degradation.pipeline import degrade
from dasrlib.device import resolve_device
from dasrlib.metrics import psnr_y
from dasrlib.models.checkpoints import load_model
from dasrlib.models.dasr import DASROutput
from dasrlib.results import project_path
from dasrlib.train.config import TrainConfig
from dasrlib.train.state import read_run_config
from dasrlib.train.stream import derive_seed, seeded_generator

__all__ = ["ValidationSet", "holdout", "sr_of", "validation_example", "validation_summary"]


def holdout(config: TrainConfig, images: ImageList) -> tuple[ImageList, ImageList | None]:
    """(training images, validation images) split by the config's seed; the same on every call."""
    count = config.data.val_images
    if count == 0:
        return images, None
    if count >= len(images):
        raise UnusableDataError(
            f"val_images={count} leaves no training image out of {len(images)} in "
            f"{config.data.data_root or 'the embedded photos'}"
        )
    return split_holdout(images, count, generator=seeded_generator(config.seed + 7919))


def sr_of(output: Tensor | DASROutput) -> Tensor:
    """The SR image of a model's output (DASR returns a `DASROutput`, the others a tensor)."""
    return output.sr if isinstance(output, DASROutput) else output


@dataclass
class _ValItem:
    name: str
    level: str
    lr: Tensor
    hr: Tensor
    bicubic_psnr: float


class ValidationSet:
    """Held-out HR centre crops degraded once per level with seeded generators (fixed LR).

    Each LR comes from `degrade(hr, level)` with a CPU generator seeded from (seed, image name,
    level), so the set is identical across runs, resumes and devices. `evaluate` reports mean
    PSNR-Y (4-pixel crop, 8-bit) of a model and of bicubic up-sampling per level.
    """

    def __init__(
        self,
        images: ImageList,
        *,
        levels: Sequence[str],
        crop: int,
        seed: int,
        scale: int,
        device: torch.device,
    ) -> None:
        self.items: list[_ValItem] = []
        for name, image in zip(images.names, images, strict=True):
            hr = _centre_crop(image, crop, scale).float().div(255.0).unsqueeze(0)
            for level in levels:
                lr, _ = degrade(
                    hr,
                    level,
                    generator=seeded_generator(derive_seed(seed, "val", name, level)),
                    scale=scale,
                )
                bicubic = _bicubic_up(lr, scale)
                self.items.append(
                    _ValItem(name, level, lr.to(device), hr.to(device), psnr_y(bicubic, hr))
                )
        self.levels = tuple(levels)
        self.scale = scale

    @classmethod
    def for_config(
        cls, config: TrainConfig, images: ImageList, device: torch.device
    ) -> ValidationSet:
        """The validation set of a run: its levels, crop, seed and scale."""
        return cls(
            images,
            levels=config.data.val_levels,
            crop=config.data.val_crop,
            seed=config.seed,
            scale=config.data.scale,
            device=device,
        )

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> list[dict[str, Any]]:
        """Rows (level, psnr_y_db, bicubic_psnr_y_db, n_images) of the mean over images."""
        was_training = model.training
        model.eval()
        scores: dict[str, list[tuple[float, float]]] = {level: [] for level in self.levels}
        for item in self.items:
            sr = sr_of(model(item.lr)).float().clamp(0, 1)
            scores[item.level].append((psnr_y(sr, item.hr), item.bicubic_psnr))
        model.train(was_training)
        rows = []
        for level, pairs in scores.items():
            rows.append(
                {
                    "level": level,
                    "psnr_y_db": sum(p for p, _ in pairs) / len(pairs),
                    "bicubic_psnr_y_db": sum(b for _, b in pairs) / len(pairs),
                    "n_images": len(pairs),
                }
            )
        return rows


def _centre_crop(image: Tensor, crop: int, scale: int) -> Tensor:
    """Centre crop of side min(crop, H, W), rounded down to a multiple of `scale`; [3, h, w]."""
    _, height, width = image.shape
    h = min(crop, height) // scale * scale
    w = min(crop, width) // scale * scale
    top, left = (height - h) // 2, (width - w) // 2
    return image[:, top : top + h, left : left + w]


def _bicubic_up(lr: Tensor, scale: int) -> Tensor:
    return F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)


def validation_summary(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """The last validation of a run: level, psnr_y_db, bicubic_psnr_y_db, gain_db, n_images."""
    frame = pd.read_csv(Path(run_dir) / "val.csv")
    last = frame[frame["iteration"] == frame["iteration"].max()].copy()
    last["gain_db"] = last["psnr_y_db"] - last["bicubic_psnr_y_db"]
    return last.reset_index(drop=True)


def validation_example(
    run_dir: str | os.PathLike[str],
    *,
    level: str = "standard",
    index: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """LR, bicubic, SR (the exported EMA model) and HR of one held-out image of a run.

    Rebuilds the run's validation set from its recorded config (same seed, same images), so the
    images are the ones behind ``val.csv``. Returns tensors [3, H, W] in [0, 1] and the PSNRs.
    """
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    data_root = config.data.data_root
    root = None if data_root is None else project_path(data_root)
    _, val_images = holdout(config, open_hr_images(root))
    if val_images is None:
        raise ValueError(f"run {run_dir} has no held-out images (val_images=0)")
    name = val_images.names[index]
    device = resolve_device(device)
    val = ValidationSet(
        val_images.subset([index]),
        levels=(level,),
        crop=config.data.val_crop,
        seed=config.seed,
        scale=config.data.scale,
        device=device,
    )
    item = val.items[0]
    model = load_model(run_dir / "model.safetensors", device=device).float()
    with torch.no_grad():
        sr = sr_of(model(item.lr)).float().clamp(0, 1)
    bicubic = _bicubic_up(item.lr, config.data.scale)
    return {
        "name": name,
        "level": level,
        "lr": item.lr[0].cpu(),
        "bicubic": bicubic[0].cpu(),
        "sr": sr[0].cpu(),
        "hr": item.hr[0].cpu(),
        "psnr_y_db": psnr_y(sr, item.hr),
        "bicubic_psnr_y_db": item.bicubic_psnr,
    }
