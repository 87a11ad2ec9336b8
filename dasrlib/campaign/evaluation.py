"""A campaign's evaluation (Sec. 4.2, Table 1 protocol): bicubic, SRResNet and DASR on the seeded
test sets of every evaluation set and level, per image (DASR minus SRResNet as paired per-image
differences: `dasrlib.evaluate.paired_differences`, the Table 2 comparison at equal iterations).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import torch

from dasrlib.evaluate import evaluate
from dasrlib.methods import Method
from dasrlib.metrics import load_lpips

__all__ = ["evaluate_models"]

logger = logging.getLogger(__name__)


def evaluate_models(
    models: Mapping[str, Path],
    testsets: Mapping[str, Path],
    levels: Sequence[str],
    *,
    device: torch.device,
) -> pd.DataFrame:
    """Per-image and mean rows (`dasrlib.evaluate.evaluate`) of bicubic and every model in
    `models` (name -> weights) on every test set; LPIPS (AlexNet) where its weights exist."""
    lpips = load_lpips(device=device)
    methods = [Method.bicubic(name="bicubic")]
    methods += [Method.checkpoint(name=name, path=path) for name, path in models.items()]
    frames = []
    for method in methods:
        for testset in testsets.values():
            frames.append(evaluate(method, testset, levels=levels, device=device, lpips=lpips))
    return pd.concat(frames, ignore_index=True)
