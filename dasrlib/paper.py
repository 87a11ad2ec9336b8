"""The paper's published numbers (Tables 1 and 2) and the names they are keyed by.

Tables 1 and 2 of Liang, Zeng and Zhang (ECCV 2022): PSNR-Y (dB) / LPIPS per method and test
set, and Table 2's cost (latency on a V100, GMACs at a 256x256 input, parameters, memory). Rows
written by `dasrlib.evaluate` carry these as ``paper_value`` beside our measurements.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = [
    "LEVELS",
    "METRIC_LPIPS",
    "METRIC_PSNR",
    "METRIC_SSIM",
    "METRIC_V_MAE",
    "PAPER_LEVEL_NAMES",
    "PAPER_TABLE1",
    "PAPER_TABLE2",
    "PAPER_TABLE2_EFFICIENCY",
    "PaperTable",
    "paper_value",
]

PaperTable = Mapping[str, Mapping[str, tuple[float, float]]]
"""{method: {level: (PSNR-Y dB, LPIPS)}}, as `PAPER_TABLE1` and `PAPER_TABLE2`."""

LEVELS: tuple[str, ...] = ("bicubic", "weak", "standard", "severe")
"""The four test sets of Tables 1 and 2, in the paper's order."""

PAPER_LEVEL_NAMES: dict[str, str] = {
    "bicubic": "Bicubic",
    "weak": "Level-I",
    "standard": "Level-II",
    "severe": "Level-III",
}

METRIC_PSNR = "psnr_y_db"
METRIC_SSIM = "ssim_y"
METRIC_LPIPS = "lpips_alex"
METRIC_V_MAE = "v_mae"

# --------------------------------------------------------------------------------------------------
# The paper's numbers (Tables 1 and 2): {method: {level: (PSNR-Y dB, LPIPS)}}
# --------------------------------------------------------------------------------------------------

PAPER_TABLE1: dict[str, dict[str, tuple[float, float]]] = {
    "RRDB": {
        "bicubic": (30.92, 0.2537),
        "weak": (26.27, 0.3419),
        "standard": (26.46, 0.4441),
        "severe": (23.91, 0.7631),
    },
    "ESRGAN": {
        "bicubic": (28.17, 0.1154),
        "weak": (21.16, 0.4727),
        "standard": (22.77, 0.4900),
        "severe": (23.63, 0.7314),
    },
    "IKC": {
        "bicubic": (28.01, 0.2695),
        "weak": (24.09, 0.3805),
        "standard": (25.39, 0.4531),
        "severe": (22.91, 0.7583),
    },
    "BSRGAN": {
        "bicubic": (27.32, 0.2364),
        "weak": (26.78, 0.2412),
        "standard": (26.75, 0.2462),
        "severe": (24.05, 0.3995),
    },
    "Real-ESRGAN": {
        "bicubic": (26.65, 0.2284),
        "weak": (26.17, 0.2312),
        "standard": (26.16, 0.2391),
        "severe": (23.81, 0.3901),
    },
    "Real-SwinIR-M": {
        "bicubic": (26.83, 0.2221),
        "weak": (26.21, 0.2247),
        "standard": (26.12, 0.2313),
        "severe": (23.34, 0.3844),
    },
    "Real-SwinIR-L": {
        "bicubic": (27.21, 0.2135),
        "weak": (26.45, 0.2161),
        "standard": (26.39, 0.2213),
        "severe": (23.46, 0.3765),
    },
    "DASR": {
        "bicubic": (28.55, 0.1696),
        "weak": (27.84, 0.1707),
        "standard": (27.58, 0.2126),
        "severe": (23.93, 0.4144),
    },
}
"""Table 1: PSNR-Y (dB) / LPIPS of published real-world SR methods on the DIV2K validation sets."""

PAPER_TABLE2: dict[str, dict[str, tuple[float, float]]] = {
    "SRResNet": {
        "bicubic": (28.05, 0.1747),
        "weak": (27.60, 0.1772),
        "standard": (27.34, 0.2228),
        "severe": (23.71, 0.4419),
    },
    "EDSR": {
        "bicubic": (28.26, 0.1807),
        "weak": (27.79, 0.1834),
        "standard": (27.53, 0.2284),
        "severe": (23.87, 0.4351),
    },
    "SwinIR": {
        "bicubic": (28.28, 0.1488),
        "weak": (27.78, 0.1531),
        "standard": (27.45, 0.1854),
        "severe": (23.60, 0.3869),
    },
    "RRDB": {
        "bicubic": (27.92, 0.1473),
        "weak": (27.84, 0.1569),
        "standard": (27.29, 0.1886),
        "severe": (23.54, 0.3847),
    },
    "DASR": {
        "bicubic": (28.55, 0.1696),
        "weak": (27.84, 0.1707),
        "standard": (27.58, 0.2126),
        "severe": (23.93, 0.4144),
    },
}
"""Table 2: backbones retrained on the DASR degradation space, PSNR-Y (dB) / LPIPS."""

PAPER_TABLE2_EFFICIENCY: dict[str, dict[str, float]] = {
    "SRResNet": {"latency_ms": 113, "gmacs": 166, "params_m": 1.52, "peak_mem_mb": 2359},
    "EDSR": {"latency_ms": 105, "gmacs": 130, "params_m": 1.52, "peak_mem_mb": 2169},
    "SwinIR": {"latency_ms": 1719, "gmacs": 539, "params_m": 11.72, "peak_mem_mb": 2699},
    "RRDB": {"latency_ms": 460, "gmacs": 1176, "params_m": 16.70, "peak_mem_mb": 2417},
    "DASR": {"latency_ms": 142, "gmacs": 184, "params_m": 8.07, "peak_mem_mb": 2452},
}
"""Table 2 efficiency: latency (ms, V100), GMACs at a 256x256 input, params (M), memory (MB)."""


def paper_value(
    table: PaperTable | None,
    method: str | None,
    level: str,
    metric: str,
) -> float:
    """The paper's PSNR-Y or LPIPS for (method, level) in `table`; NaN when the paper has none."""
    if table is None or method is None or method not in table or level not in table[method]:
        return math.nan
    psnr, lpips_value = table[method][level]
    if metric == METRIC_PSNR:
        return psnr
    if metric == METRIC_LPIPS:
        return lpips_value
    return math.nan
