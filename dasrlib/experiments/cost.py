"""What a trained network costs, measured here, and the cost rows of every table (Table 2, the
Fig. 4 ablations): the one home of both.

`measure_cost` is the one measurement: parameters, GMACs at the paper's 256x256 LR input (counted
on a ``meta`` copy, nothing computed), median latency and peak CUDA memory at a given LR size on a
given device (`dasrlib.profiling.profile_model`). Its values become long-format rows (dataset
``dasrlib.results.EFFICIENCY_DATASET``) in one of two layouts, each with a ratio that compares
across devices:

- `reference_cost_rows` (Table 2): `REFERENCE_COST_METRICS` of several networks, each also as
  ``<metric>_vs_<reference>``, a ratio to the reference network (SRResNet) beside the paper's;
- `expert_cost_rows` (Fig. 4): `EXPERT_COST_METRICS` of one DASR variant, GMACs also relative to
  one plain expert of its backbone (``gmacs_vs_expert``).

`dasrlib.tables.cost_table` renders the first layout, `dasrlib.tables.wide_table` the second.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import nn

from dasrlib.models.dasr import DASR
from dasrlib.paper import PAPER_TABLE2_EFFICIENCY
from dasrlib.profiling import count_gmacs, profile_model
from dasrlib.results import EFFICIENCY_DATASET, RESULT_COLUMNS

__all__ = [
    "COST_REFERENCE",
    "EXPERT_COST_METRICS",
    "GMACS_SIZE",
    "REFERENCE_COST_METRICS",
    "CostMeasurement",
    "expert_cost_rows",
    "height_width",
    "measure_cost",
    "reference_cost_rows",
]

GMACS_SIZE = 256
"""GMACs are counted at a GMACS_SIZE x GMACS_SIZE LR input, as in the paper."""

REFERENCE_COST_METRICS: tuple[tuple[str, str, str], ...] = (
    ("params_m", "params_m", "parameters (M), all experts of DASR"),
    ("gmacs_256", "gmacs", "GMACs of one 256x256 LR input (inference path)"),
    ("latency_ms", "latency_ms", "median latency (ms), fp32, batch 1"),
    ("peak_mem_mb", "peak_mem_mb", "peak GPU memory (MB) of the latency runs"),
)
"""Table 2's cost metrics: (metric name in the CSV, key of PAPER_TABLE2_EFFICIENCY, meaning)."""

COST_REFERENCE = "SRResNet"
"""Table 2's cost ratios divide by this column (the paper's timings are on a V100, ours are not)."""

EXPERT_COST_METRICS: tuple[str, ...] = (
    "params_m",
    "gmacs",
    "gmacs_vs_expert",
    "latency_ms",
    "peak_mem_mb",
)
"""The Fig. 4 ablations' cost rows per variant: parameters (M, all experts), GMACs at 256x256
(also relative to one expert), median latency, peak GPU memory."""


@dataclass(frozen=True)
class CostMeasurement:
    """One network's cost: parameters (M), GMACs at 256x256, median latency (ms) and peak
    memory (MB, NaN off CUDA) at an LR input of `height` x `width`, on `device` (`where`: the
    GPU's name on CUDA)."""

    params_m: float
    gmacs_256: float
    latency_ms: float
    peak_mem_mb: float
    height: int
    width: int
    device: str
    where: str


def height_width(size: int | Sequence[int]) -> tuple[int, int]:
    """(height, width) of a side or a (height, width) pair."""
    if isinstance(size, int):
        return size, size
    if len(size) != 2:
        raise ValueError(f"a size is an int or (height, width), got {size!r}")
    return int(size[0]), int(size[1])


def measure_cost(
    model: nn.Module,
    *,
    latency_size: int | Sequence[int],
    device: torch.device,
    repeats: int,
    warmup: int,
    precision: str = "fp32",
    generator: torch.Generator | None = None,
) -> CostMeasurement:
    """Cost of `model`'s inference path (`DASRInference` for DASR), one [1, 3, H, W] input."""
    height, width = height_width(latency_size)
    gmacs = count_gmacs(model, size=GMACS_SIZE, on_meta=True)
    profile = profile_model(
        model,
        size=(height, width),
        device=device,
        precision=precision,
        repeats=repeats,
        warmup=warmup,
        latency=True,
        generator=generator,
    )
    peak = profile["peak_mem_mb"]
    return CostMeasurement(
        params_m=float(profile["params_m"]),
        gmacs_256=gmacs,
        latency_ms=float(profile["latency_ms"]),
        peak_mem_mb=math.nan if peak is None else float(peak),
        height=height,
        width=width,
        device=str(profile["device"]),
        where=str(profile.get("device_name") or profile["device"]),
    )


def _row(
    method: str,
    metric: str,
    value: float,
    *,
    level: str,
    n_images: int,
    paper_value: float,
    note: str,
) -> dict[str, Any]:
    """One cost row: the `RESULT_COLUMNS` (dataset `EFFICIENCY_DATASET`) and its note."""
    return {
        "method": method,
        "dataset": EFFICIENCY_DATASET,
        "level": level,
        "metric": metric,
        "value": value,
        "n_images": n_images,
        "paper_value": paper_value,
        "note": note,
    }


def _cuda_only(ran_on: str) -> str:
    return f"n/a: peak memory is measured on CUDA only (ran on {ran_on})"


def reference_cost_rows(
    models: Mapping[str, nn.Module],
    *,
    device: torch.device | str,
    latency_size: int | Sequence[int],
    repeats: int,
    warmup: int,
    reference: str = COST_REFERENCE,
) -> pd.DataFrame:
    """Table 2's cost rows measured here: parameters, GMACs at 256x256, latency, peak memory.

    GMACs are counted on a `meta` copy at 256x256 (as the paper; no compute). Latency and peak
    memory are measured on `device` at `latency_size` (paper: the DIV2K validation LR inputs,
    mostly 339x510; peak memory only on CUDA). Each metric also gets a ``<metric>_vs_<reference>``
    row (``_vs_srresnet``): ours / ours of `reference` beside the paper's ratio, the comparable
    number across devices. Columns: `RESULT_COLUMNS`, image, aggregate ("mean"), note.
    """
    device = torch.device(device)
    suffix = f"_vs_{reference.lower()}"
    measured: dict[str, dict[str, float]] = {}
    notes: dict[str, str] = {}
    for name, model in models.items():
        cost = measure_cost(
            model, latency_size=latency_size, device=device, repeats=repeats, warmup=warmup
        )
        measured[name] = {
            "params_m": cost.params_m,
            "gmacs_256": cost.gmacs_256,
            "latency_ms": cost.latency_ms,
            "peak_mem_mb": cost.peak_mem_mb,
        }
        notes[name] = f"measured on {cost.where} at LR {cost.height}x{cost.width}"
    rows = []
    ours_ref = measured.get(reference)
    paper_ref = PAPER_TABLE2_EFFICIENCY[reference]
    for name, values in measured.items():
        paper = PAPER_TABLE2_EFFICIENCY.get(name)
        for metric, paper_key, _ in REFERENCE_COST_METRICS:
            value = values[metric]
            note = notes[name] if metric in ("latency_ms", "peak_mem_mb") else ""
            if metric == "peak_mem_mb" and math.isnan(value):
                note = _cuda_only(device.type)
            rows.append(
                _row(
                    name,
                    metric,
                    value,
                    level="",
                    n_images=1,
                    paper_value=math.nan if paper is None else float(paper[paper_key]),
                    note=note,
                )
            )
            rows.append(
                _row(
                    name,
                    f"{metric}{suffix}",
                    math.nan if ours_ref is None else value / ours_ref[metric],
                    level="",
                    n_images=1,
                    paper_value=math.nan
                    if paper is None
                    else float(paper[paper_key]) / float(paper_ref[paper_key]),
                    note="" if ours_ref is not None else f"n/a: {reference} not measured",
                )
            )
    frame = pd.DataFrame(rows, columns=[*RESULT_COLUMNS, "note"])
    frame["image"] = ""
    frame["aggregate"] = "mean"
    return frame.loc[:, [*RESULT_COLUMNS, "image", "aggregate", "note"]]


def _is_paper_size(model: nn.Module) -> bool:
    """True when `model` is DASR at the paper's size (N = 5 SRResNet experts, 64 features, 16
    blocks, 64-feature predictor), whose parameters and GMACs Table 2 gives."""
    options = getattr(model, "architecture", {}).get("options", {})
    paper = {
        "num_experts": 5,
        "backbone": "srresnet",
        "num_feat": 64,
        "num_block": 16,
        "predictor_feat": 64,
        "weighting": "linear",
        "mixing": "weights",
    }
    return all(options.get(k) == v for k, v in paper.items())


def expert_cost_rows(
    method: str,
    model: nn.Module,
    *,
    latency_size: int | Sequence[int],
    device: torch.device,
    repeats: int,
    warmup: int,
    precision: str = "fp32",
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Rows of `EXPERT_COST_METRICS` for one DASR variant, or a plain network (N = 1, its own
    expert), level = the input size.

    ``gmacs`` is counted at a 256x256 LR input (the paper's convention) on a ``meta`` copy, so
    nothing is computed; ``gmacs_vs_expert`` divides it by the GMACs of one plain expert of the
    variant's backbone (classical MoE ~N, DASR ~1 plus the predictor). Both are of the inference
    path (`DASRInference`: P, A, the mixing and one adapted expert; every expert for classical
    MoE). ``latency_ms`` (median) and ``peak_mem_mb`` (CUDA only) are measured on `device` at a
    `latency_size` LR input (side or (height, width); `dasrlib.profiling.profile_model`).
    `paper_value` holds Table 2's DASR entry where it applies: DASR at the paper's size.
    """
    with torch.device("meta"):
        expert = model.plain_expert() if isinstance(model, DASR) else model
        expert_gmacs = count_gmacs(expert, size=GMACS_SIZE, on_meta=True)
    backbone = model.backbone if isinstance(model, DASR) else type(model).__name__
    cost = measure_cost(
        model,
        latency_size=latency_size,
        device=device,
        repeats=repeats,
        warmup=warmup,
        precision=precision,
        generator=torch.Generator().manual_seed(seed),
    )
    height, width = cost.height, cost.width
    measured = {
        "params_m": cost.params_m,
        "gmacs": cost.gmacs_256,
        "gmacs_vs_expert": cost.gmacs_256 / expert_gmacs,
        "latency_ms": cost.latency_ms,
        "peak_mem_mb": cost.peak_mem_mb,
    }
    paper: dict[str, float] = {}
    if _is_paper_size(model):
        table = PAPER_TABLE2_EFFICIENCY
        paper = {
            "params_m": table["DASR"]["params_m"],
            "gmacs": table["DASR"]["gmacs"],
            "gmacs_vs_expert": table["DASR"]["gmacs"] / table["SRResNet"]["gmacs"],
        }
    timed = f"LR {height}x{width} on {cost.where} ({precision})"
    counted = f"{GMACS_SIZE}x{GMACS_SIZE}"
    levels = {
        "params_m": "",
        "gmacs": counted,
        "gmacs_vs_expert": counted,
        "latency_ms": f"{height}x{width}",
        "peak_mem_mb": f"{height}x{width}",
    }
    notes = {
        "params_m": "all experts, predictor and weighting module"
        if isinstance(model, DASR)
        else "the plain network",
        "gmacs": "inference path, FlopCounterMode multiply-adds on a meta copy",
        "gmacs_vs_expert": f"gmacs / one plain {backbone} expert ({expert_gmacs:.3g} GMACs)",
        "latency_ms": f"median of {repeats} runs after {warmup} warm-up, {timed}",
        "peak_mem_mb": f"peak allocated CUDA memory, {timed}"
        if not math.isnan(cost.peak_mem_mb)
        else _cuda_only(cost.device),
    }
    return [
        _row(
            method,
            metric,
            measured[metric],
            level=levels[metric],
            n_images=0 if math.isnan(measured[metric]) else 1,
            paper_value=float(paper[metric]) if metric in paper else math.nan,
            note=notes[metric],
        )
        for metric in EXPERT_COST_METRICS
    ]
