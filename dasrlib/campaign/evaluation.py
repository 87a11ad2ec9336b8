"""A campaign's evaluation (Sec. 4.2, Table 1 protocol): bicubic, SRResNet and DASR on the seeded
test sets of every evaluation set and level, per image; DASR minus SRResNet as paired per-image
differences with 95 % confidence intervals (the Table 2 comparison at equal iterations).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import torch
from scipy import stats

from dasrlib.evaluate import evaluate
from dasrlib.methods import Method
from dasrlib.metrics import load_lpips
from dasrlib.paper import METRIC_LPIPS, METRIC_PSNR, METRIC_SSIM
from dasrlib.testsets import prepare_testsets

__all__ = ["GAP_COLUMNS", "evaluate_models", "paired_differences", "prepare_eval_sets"]

logger = logging.getLogger(__name__)

GAP_COLUMNS = ["dataset", "level", "metric", "n_images", "mean", "ci95_low", "ci95_high"]


def prepare_eval_sets(
    eval_root: Path,
    sets: Sequence[str],
    levels: Sequence[str],
    *,
    seed: int,
    max_images: int | None,
    testsets_dir: Path,
) -> dict[str, Path]:
    """The seeded test sets of each evaluation set (``<testsets_dir>/shared_<set>``), built on
    the CPU or reused when their manifest matches (`dasrlib.testsets.prepare_testsets`)."""
    out = {}
    for name in sets:
        hr = eval_root / name
        if not hr.is_dir():
            raise FileNotFoundError(f"evaluation set {name}: HR folder {hr} does not exist")
        suffix = "" if max_images is None else f"_first{max_images}"
        target = testsets_dir / f"shared_{name.lower()}{suffix}"
        prepared = prepare_testsets(
            hr, target, levels=levels, seed=seed, max_images=max_images, device="cpu"
        )
        out[name] = prepared.path
    return out


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


def paired_differences(
    rows: pd.DataFrame, *, minuend: str = "dasr", subtrahend: str = "srresnet"
) -> pd.DataFrame:
    """`minuend` minus `subtrahend` per (dataset, level, metric) over the images both have: the
    mean of the per-image differences and its 95 % t confidence interval."""
    metrics = (METRIC_PSNR, METRIC_SSIM, METRIC_LPIPS)
    images = rows[(rows["aggregate"] == "image") & rows["metric"].isin(metrics)]
    key = ["dataset", "level", "metric", "image"]
    a = images[images["method"] == minuend].set_index(key)["value"]
    b = images[images["method"] == subtrahend].set_index(key)["value"]
    diff = (a - b).dropna()
    out = []
    for (dataset, level, metric), values in diff.groupby(level=["dataset", "level", "metric"]):
        n = len(values)
        mean = float(values.mean())
        half = math.nan
        if n > 1:
            half = float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n))
        out.append(
            {
                "dataset": dataset,
                "level": level,
                "metric": metric,
                "n_images": n,
                "mean": mean,
                "ci95_low": mean - half,
                "ci95_high": mean + half,
            }
        )
    return pd.DataFrame(out, columns=GAP_COLUMNS)
