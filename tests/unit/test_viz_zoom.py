"""Zoomed rows of comparison figures show a crop, not the whole image again."""

from __future__ import annotations

import pytest
import torch

from dasrlib import viz


@pytest.mark.parametrize("lr_side", [32, 20, 300])
def test_zoom_box_is_a_real_crop(lr_side: int) -> None:
    top, left, side = viz.centre_crop_box(lr_side, lr_side + 10)
    assert side <= lr_side // 2 and side <= 48
    assert top == (lr_side - side) // 2 and left == (lr_side + 10 - side) // 2


def test_training_example_zoom_row_differs_from_the_top_row() -> None:
    """The demo's validation crop (128 HR pixels, LR 32) used to zoom onto the whole image."""
    image = torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(0))
    fig = viz.comparison_figure([("SR", image), ("HR", image)], scale=4)
    top_row, zoom_row = fig.axes[:2], fig.axes[2:]
    for full, zoom in zip(top_row, zoom_row, strict=True):
        full_shape = full.images[0].get_array().shape
        zoom_shape = zoom.images[0].get_array().shape
        assert full_shape[:2] == (128, 128) and zoom_shape[:2] == (64, 64)
