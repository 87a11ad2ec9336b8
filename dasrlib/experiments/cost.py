"""What a trained network costs, measured here (Table 2 and the Fig. 4 ablations).

`measure_cost` is the one measurement both tables use: parameters, GMACs at the paper's 256x256 LR
input (counted on a ``meta`` copy, nothing computed), median latency and peak CUDA memory at a
given LR size on a given device (`dasrlib.profiling.profile_model`). Each table writes these
values as its own rows (`dasrlib.experiments.table2.efficiency_rows`,
`dasrlib.experiments.ablations.cost_rows`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from dasrlib.profiling import count_gmacs, profile_model

__all__ = ["GMACS_SIZE", "CostMeasurement", "height_width", "measure_cost"]

GMACS_SIZE = 256
"""GMACs are counted at a GMACS_SIZE x GMACS_SIZE LR input, as in the paper."""


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
