"""The evaluation loop (Sec. 4.1 protocol; Tables 1 and 2, the Fig. 4 ablations).

`evaluate` runs one `dasrlib.methods.Method` over the test sets built by `dasrlib.testsets` and
returns long-format rows (STYLE point 8): one row per image and metric, then one mean row per
(level, metric) carrying `n_images`. LPIPS rows say "n/a: ..." in `note` when the AlexNet weights
are missing; a metric that fails raises an error naming the image, it never drops it.
`evaluate_methods` keeps a method without weights in the table, marked "not provided".
The tables are planned and tabulated in `dasrlib.experiments` (Table 1, Table 2, the Fig. 4
ablations) and rendered by `dasrlib.tables`; the paper's numbers are in `dasrlib.paper`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from scipy import stats

from dasrlib.methods import Method, Upscaler, load_upscaler
from dasrlib.metrics import LPIPSMetric, LPIPSUnavailable, psnr_y, ssim_y
from dasrlib.paper import (
    LEVELS,
    METRIC_LPIPS,
    METRIC_PSNR,
    METRIC_SSIM,
    METRIC_V_MAE,
    PaperTable,
    paper_value,
)
from dasrlib.results import RESULT_COLUMNS, run_metadata, write_results
from dasrlib.testsets import dataset_name, load_testset, testset_summary

__all__ = [
    "GAP_COLUMNS",
    "NOT_PROVIDED",
    "QUALITY_METRICS",
    "EvaluationError",
    "evaluate",
    "evaluate_methods",
    "lpips_description",
    "not_provided_rows",
    "paired_differences",
]

logger = logging.getLogger(__name__)

NOT_PROVIDED = "not provided"

QUALITY_METRICS: tuple[str, ...] = (METRIC_PSNR, METRIC_LPIPS)
"""The metrics of the paper's tables (SSIM-Y and v_mae are in the CSV too)."""


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------


class EvaluationError(RuntimeError):
    """A method or metric failed on a named image; nothing is dropped from an average silently."""


def _row(
    method: Method,
    dataset: str,
    level: str,
    metric: str,
    value: float,
    n_images: int,
    *,
    paper: PaperTable | None,
    image: str | None,
    note: str = "",
) -> dict[str, Any]:
    return {
        "method": method.name,
        "dataset": dataset,
        "level": level,
        "metric": metric,
        "value": value,
        "n_images": n_images,
        "paper_value": math.nan
        if image is not None
        else paper_value(paper, method.paper_name, level, metric),
        "image": image if image is not None else "",
        "aggregate": "image" if image is not None else "mean",
        "note": note,
    }


def _as_batch(img: torch.Tensor, device: torch.device) -> torch.Tensor:
    return (img if img.ndim == 4 else img[None]).to(device=device, dtype=torch.float32)


def _measure(
    metric: str,
    name: str,
    level: str,
    fn: Callable[[torch.Tensor, torch.Tensor], float],
    sr: torch.Tensor,
    hr: torch.Tensor,
) -> float:
    try:
        return fn(sr, hr)
    except Exception as err:
        raise EvaluationError(f"{metric} failed on image {name!r} ({level}): {err}") from err


@torch.inference_mode()
def evaluate(
    method: Method,
    testset_dir: str | os.PathLike[str],
    *,
    levels: Sequence[str] = LEVELS,
    device: torch.device | str,
    lpips: LPIPSMetric | LPIPSUnavailable | None = None,
    out_csv: str | os.PathLike[str] | None = None,
    paper: PaperTable | None = None,
    upscaler: Upscaler | None = None,
) -> pd.DataFrame:
    """PSNR-Y, SSIM-Y, LPIPS (and v_mae for DASR) of `method` on each test set in `levels`.

    Returns long-format rows: per image (`aggregate == "image"`, n_images 1) and the mean per
    (level, metric) (`aggregate == "mean"`, n_images = images averaged). `lpips=None` skips
    LPIPS; `LPIPSUnavailable` gives one mean row per level with NaN and the reason in `note`.
    `paper` is PAPER_TABLE1 or PAPER_TABLE2 (looked up by `method.paper_name`). `upscaler`
    overrides loading `method`'s weights (a model already in memory). With `out_csv` the rows
    are also written with their JSON sidecar.
    """
    device = torch.device(device)
    testset_dir = Path(testset_dir)
    dataset = dataset_name(testset_dir)
    run = upscaler if upscaler is not None else load_upscaler(method, device=device)
    rows: list[dict[str, Any]] = []
    for level in levels:
        values: dict[str, list[float]] = {}
        v_missing = 0
        names: list[str] = []
        for name, lr, hr, v in load_testset(testset_dir, level):
            names.append(name)
            lr_b = _as_batch(lr, device)
            try:
                sr, v_hat = run(lr_b)
            except Exception as err:
                raise EvaluationError(
                    f"{method.name} failed on image {name!r} ({level}, "
                    f"LR {tuple(lr_b.shape)}): {err}"
                ) from err
            hr_b = _as_batch(hr, torch.device("cpu"))
            if tuple(sr.shape) != tuple(hr_b.shape):
                raise EvaluationError(
                    f"{method.name} returned SR {tuple(sr.shape)} for image {name!r} ({level}) but "
                    f"its HR is {tuple(hr_b.shape)}; test-set HR sides are multiples of 4, so a x4 "
                    "method must match them exactly"
                )
            sr = sr.cpu()
            if not torch.isfinite(sr).all():
                bad = int((~torch.isfinite(sr)).sum())
                raise EvaluationError(
                    f"{method.name} returned {bad} non-finite values for image {name!r} ({level})"
                )
            per_image = {
                METRIC_PSNR: _measure(METRIC_PSNR, name, level, psnr_y, sr, hr_b),
                METRIC_SSIM: _measure(METRIC_SSIM, name, level, ssim_y, sr, hr_b),
            }
            if isinstance(lpips, LPIPSMetric):
                per_image[METRIC_LPIPS] = _measure(METRIC_LPIPS, name, level, lpips, sr, hr_b)
            if v_hat is not None:
                if v is None:
                    v_missing += 1
                else:
                    target = torch.as_tensor(v, dtype=torch.float32).reshape(-1)
                    pred = v_hat.detach().float().cpu().reshape(-1)
                    if pred.shape != target.shape:
                        raise EvaluationError(
                            f"v_hat {tuple(pred.shape)} and manifest v {tuple(target.shape)} of "
                            f"image {name!r} ({level}) differ in length"
                        )
                    per_image[METRIC_V_MAE] = float((pred - target).abs().mean())
            for metric, value in per_image.items():
                values.setdefault(metric, []).append(value)
                rows.append(_row(method, dataset, level, metric, value, 1, paper=paper, image=name))
        if not names:
            raise EvaluationError(f"test set {testset_dir} has no images for level {level!r}")
        for metric, vals in values.items():
            note = ""
            if metric == METRIC_V_MAE and v_missing:
                note = f"manifest has no v for {v_missing} of {len(names)} images"
            mean = sum(vals) / len(vals)
            rows.append(
                _row(
                    method,
                    dataset,
                    level,
                    metric,
                    mean,
                    len(vals),
                    paper=paper,
                    image=None,
                    note=note,
                )
            )
        if isinstance(lpips, LPIPSUnavailable):
            rows.append(
                _row(
                    method,
                    dataset,
                    level,
                    METRIC_LPIPS,
                    math.nan,
                    0,
                    paper=paper,
                    image=None,
                    note=str(lpips),
                )
            )
        logger.info("%s on %s/%s: %d images", method.name, dataset, level, len(names))
    frame = pd.DataFrame(rows, columns=[*RESULT_COLUMNS, "image", "aggregate", "note"])
    if out_csv is not None:
        config = {
            "method": {"name": method.name, **method.record()},
            "testsets": testset_summary(testset_dir),
            "levels": list(levels),
            "lpips": lpips_description(lpips),
        }
        write_results(frame, out_csv, metadata=run_metadata(config=config, device=device))
    return frame


def not_provided_rows(
    name: str,
    dataset: str,
    *,
    levels: Iterable[str],
    metrics: Iterable[str] = (METRIC_PSNR, METRIC_LPIPS),
    paper: PaperTable | None = None,
    paper_name: str | None = None,
    note: str = NOT_PROVIDED,
) -> pd.DataFrame:
    """Mean rows with NaN values and `note` for a method whose weights were not given."""
    rows = [
        {
            "method": name,
            "dataset": dataset,
            "level": level,
            "metric": metric,
            "value": math.nan,
            "n_images": 0,
            "paper_value": paper_value(paper, paper_name, level, metric),
            "image": "",
            "aggregate": "mean",
            "note": note,
        }
        for level in levels
        for metric in metrics
    ]
    return pd.DataFrame(rows, columns=[*RESULT_COLUMNS, "image", "aggregate", "note"])


def evaluate_methods(
    methods: Mapping[str, Method | None],
    testset_dir: str | os.PathLike[str],
    *,
    levels: Sequence[str],
    device: torch.device | str,
    lpips: LPIPSMetric | LPIPSUnavailable | None,
    paper: PaperTable,
    upscalers: Mapping[str, Upscaler] | None = None,
    how_to_fill: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """`evaluate` every provided method; the others keep their rows, marked "not provided".

    A method given as None, or whose weight file does not exist (a conventional location the
    user has not filled), gets NaN rows whose note says which, followed by ``how_to_fill[name]``
    (where the weights are published and where to put them) when given.

    `lpips=None` fills the LPIPS cells with "n/a: LPIPS not requested" (the row stays).
    `upscalers` gives, by method name, a model already in memory instead of loading its weights.
    """
    testset_dir = Path(testset_dir)
    dataset = dataset_name(testset_dir)
    if lpips is None:
        lpips = LPIPSUnavailable("LPIPS not requested")
    frames = []
    for name, method in methods.items():
        absent = (
            None if method is None else next((w for w in method.weights if not w.is_file()), None)
        )
        if method is None or absent is not None:
            note = NOT_PROVIDED if absent is None else f"{NOT_PROVIDED}: no file at {absent}"
            hint = (how_to_fill or {}).get(name)
            if hint:
                note = f"{note}; to fill: {hint}"
            if absent is None:
                logger.info("%s: weights not provided; its cells say %r", name, note)
            else:
                logger.warning("%s: weights not found at %s; its cells say so", name, absent)
            frames.append(
                not_provided_rows(
                    name,
                    dataset,
                    levels=levels,
                    metrics=QUALITY_METRICS,
                    paper=paper,
                    paper_name=name if name in paper else None,
                    note=note,
                )
            )
        else:
            frames.append(
                evaluate(
                    method,
                    testset_dir,
                    levels=levels,
                    device=device,
                    lpips=lpips,
                    paper=paper,
                    upscaler=None if upscalers is None else upscalers.get(name),
                )
            )
    return pd.concat(frames, ignore_index=True)


def lpips_description(lpips: LPIPSMetric | LPIPSUnavailable | None) -> str | None:
    """What a sidecar records about LPIPS: the AlexNet file, the reason it is missing, or None."""
    if isinstance(lpips, LPIPSMetric):
        return str(lpips.alexnet_path)
    return None if lpips is None else str(lpips)


# --------------------------------------------------------------------------------------------------
# Paired comparison
# --------------------------------------------------------------------------------------------------

GAP_COLUMNS = ["dataset", "level", "metric", "n_images", "mean", "ci95_low", "ci95_high"]


def paired_differences(
    rows: pd.DataFrame,
    *,
    minuend: str,
    subtrahend: str,
    metrics: Sequence[str] = (METRIC_PSNR, METRIC_SSIM, METRIC_LPIPS),
) -> pd.DataFrame:
    """`minuend` minus `subtrahend` (``method`` values) per (dataset, level, metric) over the
    images both have: the mean of the per-image differences and its 95 % t confidence interval
    (NaN bounds for one image). `rows` are `evaluate` rows; only per-image rows are used."""
    images = rows[rows["metric"].isin(metrics)]
    if "aggregate" in images:
        images = images[images["aggregate"] == "image"]
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
