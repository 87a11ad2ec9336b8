"""Fig. 2 figure: one HR crop under each degradation level, written as a PNG."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from dasrlib.viz import fig2_levels


def test_fig2_levels_writes_a_png(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(3, 8, 8, generator=g)
    crop = torch.nn.functional.interpolate(coarse[None], size=(64, 64), mode="bilinear")[0]
    out = fig2_levels(crop, tmp_path / "figs" / "fig2.png", seed=0)
    assert out == tmp_path / "figs" / "fig2.png"
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 4 * image.height / 2
    assert out.stat().st_size < 1_000_000
    with pytest.raises(ValueError, match="hr_crop"):
        fig2_levels(torch.zeros(2, 3, 64, 64), tmp_path / "bad.png")
