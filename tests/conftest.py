"""Fixtures shared by the whole suite (small, deterministic, offline)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n 2` on 2 cores: two workers with two OpenMP threads each spin-wait on each other
    # (measured: the model tests took 128 s instead of 8 s). One thread per worker, and per
    # notebook kernel the worker starts.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)


@pytest.fixture
def generator() -> torch.Generator:
    """A CPU torch generator seeded with 0."""
    return torch.Generator().manual_seed(0)


@pytest.fixture
def np_rng() -> np.random.Generator:
    """A numpy generator seeded with 0."""
    return np.random.default_rng(0)


@pytest.fixture
def make_image_file(tmp_path: Path) -> Callable[..., Path]:
    """Factory writing a random smooth-ish RGB image file under tmp_path.

    ``make_image_file("a/b.png", width=64, height=48, seed=0, mode="RGB")`` returns its path;
    the format follows the file ending.
    """

    def make(
        relative: str, *, width: int = 64, height: int = 48, seed: int = 0, mode: str = "RGB"
    ) -> Path:
        rng = np.random.default_rng(seed)
        coarse = rng.integers(0, 256, size=(height // 8 + 2, width // 8 + 2, 3), dtype=np.uint8)
        pixels = np.asarray(
            Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR)
        )
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).convert(mode).save(path)
        return path

    return make


@pytest.fixture
def hr_folder(make_image_file: Callable[..., Path], tmp_path: Path) -> Path:
    """A tiny HR folder: 4 images (PNG, JPEG, BMP, nested TIFF), one of them smaller than 64."""
    make_image_file("hr/0001.png", width=96, height=80, seed=1)
    make_image_file("hr/0002.JPG", width=80, height=72, seed=2)
    make_image_file("hr/0003.bmp", width=40, height=30, seed=3)
    make_image_file("hr/sub/0004.tif", width=72, height=100, seed=4)
    (tmp_path / "hr" / "notes.txt").write_text("not an image")
    return tmp_path / "hr"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite tests/golden/*.safetensors from the current code instead of comparing "
        "(tests/unit/test_golden.py; commit the new files with the numerics change)",
    )
