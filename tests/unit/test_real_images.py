"""The real-photo comparison: crop choice, one row per photo, missing methods said on the figure."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from dasrlib.experiments.real_images import (
    most_textured_crop,
    real_image_rows,
    write_real_image_figure,
)
from dasrlib.io import write_png
from dasrlib.models.checkpoints import save_weights
from dasrlib.models.dasr import DASR


def test_the_crop_is_the_most_textured_square() -> None:
    image = torch.full((3, 64, 80), 0.5)
    image[:, 32:48, 48:64] = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    top, left = most_textured_crop(image, 16)
    assert (top, left) == (32, 48)


def test_one_row_per_photo_and_a_missing_method_is_said(tmp_path: Path) -> None:
    folder = tmp_path / "real"
    generator = torch.Generator().manual_seed(1)
    for name in ("a", "b", "c"):
        write_png(folder / f"{name}.png", torch.rand(3, 30, 36, generator=generator))
    model = DASR(num_feat=8, num_block=1, predictor_feat=8, generator=generator)
    save_weights(model.eval(), tmp_path / "dasr.safetensors")
    methods = {
        "bicubic": "bicubic",
        "DASR": str(tmp_path / "dasr.safetensors"),
        "absent": str(tmp_path / "absent.safetensors"),
    }
    photos = sorted(folder.glob("*.png"))[:2]
    rows, missing = real_image_rows(photos, methods, crop=16, device="cpu")
    assert [name for name, _ in rows] == ["a", "b"]
    assert list(rows[0][1]) == ["LR (nearest)", "bicubic", "DASR", "absent"]
    assert rows[0][1]["absent"] is None and "absent" in missing
    for panel in ("LR (nearest)", "bicubic", "DASR"):
        assert rows[1][1][panel].shape == (3, 64, 64)
    out = write_real_image_figure(
        tmp_path / "fig.png", folder=folder, methods=methods, names=["c", "a"], crop=16
    )
    assert out == tmp_path / "fig.png" and Image.open(out).size[0] > 400
    assert write_real_image_figure(tmp_path / "x.png", folder=tmp_path / "none") is None
