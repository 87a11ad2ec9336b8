"""Table 2 (Sec. 4.3): backbones retrained on the DASR degradation space with one budget, then
evaluated on the seeded test sets and profiled on this device.

The experiment shape (`dasrlib.experiments`): `plan` says what to train with
`dasrlib.experiments.runs` (one shared budget; DASR's experts start from an SRResNet pretrained
with the pixel loss; run names carry the resume hash), `dasrlib.experiments.runs.run_plan` trains
or loads the runs, and `tabulate` evaluates the trained networks and adds their cost
(`dasrlib.experiments.cost.reference_cost_rows`: ratios to SRResNet beside the paper's V100
ratios); it writes ``table2.{csv,json,md}``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from dasrlib.evaluate import QUALITY_METRICS, evaluate_methods, lpips_description
from dasrlib.experiments.cost import COST_REFERENCE, REFERENCE_COST_METRICS, reference_cost_rows
from dasrlib.experiments.runs import (
    NetworkRun,
    Plan,
    Pretraining,
    RunNaming,
    TrainedRun,
    plan_runs,
)
from dasrlib.methods import Method, network_upscaler
from dasrlib.metrics import LPIPSMetric, LPIPSUnavailable
from dasrlib.models.checkpoints import load_model
from dasrlib.paper import LEVELS, PAPER_TABLE2
from dasrlib.results import run_metadata
from dasrlib.tables import QUALITY_NOTE, TableResult, comparison_table, cost_table, write_table
from dasrlib.testsets import read_testset_manifest, testset_summary
from dasrlib.train.state import latest_iteration, read_run_config

__all__ = [
    "COST_HEADING",
    "COST_NOTE",
    "PAPER_ITERATIONS",
    "SMOKE_ITERATIONS",
    "TABLE2_TRAINING",
    "cost_section",
    "plan",
    "table2_title",
    "tabulate",
    "trained_iterations",
]

TABLE2_TITLE = "Table 2: backbones retrained on the DASR degradation space"
COST_HEADING = "Cost (measured on this device; ratios to SRResNet beside the paper's)"
COST_NOTE = (
    "cost: GMACs at a 256x256 LR input; latency and memory on this device (the paper's are a "
    "V100's), so compare the ratios to SRResNet"
)
PAPER_ITERATIONS = 500_000
"""The paper's training length of every Table 2 network (Sec. 4.1)."""
SMOKE_ITERATIONS = 1_000
"""Below this many iterations a network has learnt next to nothing: the table is a smoke test."""

TABLE2_TRAINING: dict[str, dict[str, str]] = {
    "SRResNet": {"stage": "baseline", "backbone": "srresnet"},
    "EDSR": {"stage": "baseline", "backbone": "edsr"},
    "RRDB": {"stage": "baseline", "backbone": "rrdb"},
    "SwinIR": {"stage": "baseline", "backbone": "swinir"},
    "DASR": {"stage": "dasr", "backbone": "srresnet"},
}
"""How each Table 2 column is trained (`TrainConfig` stage and backbone). DASR's experts start
from an SRResNet pretrained with the pixel loss (Sec. 4.1), its own run before the DASR run."""

TABLE2_NAMING = RunNaming(prefix="table2", hashed=True)
"""Table 2 run folders: ``table2_<method>_<resume hash>``, ``table2_dasr_pretrain_<hash>``."""

_DASR_PRETRAINING = Pretraining(role="dasr_pretrain", backbone="srresnet")


def plan(
    budget: Mapping[str, Any],
    *,
    methods: Sequence[str] = tuple(TABLE2_TRAINING),
    dasr_pretrain_iterations: int,
) -> Plan:
    """The training runs of Table 2: one shared budget (`TrainConfig` fields) for every network.

    Returns, per method, its stage configs in order (DASR: the SRResNet pretrain, then DASR
    initialised from it). Run names carry `dasrlib.train.config.resume_hash` of the config, so a run
    with other data, model or loss settings never resumes or overwrites this one, while more
    iterations (or another device) continue the same run from its checkpoint.
    """
    for key in ("name", "stage", "backbone", "init_from"):
        if key in budget:
            raise ValueError(f"budget sets {key!r}; Table 2 chooses it per method")
    unknown = [m for m in methods if m not in TABLE2_TRAINING]
    if unknown:
        raise ValueError(f"unknown Table 2 methods {unknown}; expected {list(TABLE2_TRAINING)}")
    networks = {
        method: NetworkRun(
            role=method.lower(),
            fields=TABLE2_TRAINING[method],
            pretraining=_DASR_PRETRAINING if method == "DASR" else None,
        )
        for method in methods
    }
    return plan_runs(
        budget, networks, pretrain_iterations=dasr_pretrain_iterations, naming=TABLE2_NAMING
    )


def trained_iterations(run: TrainedRun) -> int:
    """The iterations `run`'s network was trained for: its latest checkpoint's, else the planned."""
    reached = latest_iteration(run.run_dir / "checkpoints")
    return int(reached) if reached is not None else read_run_config(run.run_dir).schedule.iterations


def table2_title(iterations: Mapping[str, int]) -> str:
    """Table 2's title; it starts with SMOKE TEST or SHORT BUDGET when the networks trained for
    fewer than `SMOKE_ITERATIONS` or `PAPER_ITERATIONS` iterations (`iterations`: by column)."""
    if not iterations:
        return TABLE2_TITLE
    fewest = min(iterations.values())
    trained = ", ".join(f"{name} {n}" for name, n in iterations.items())
    if fewest < SMOKE_ITERATIONS:
        return (
            f"SMOKE TEST, not results: the networks trained {trained} iterations (the paper: "
            f"{PAPER_ITERATIONS}), so these numbers only show that the code runs and mean nothing "
            f"next to the paper's. {TABLE2_TITLE}"
        )
    if fewest < PAPER_ITERATIONS:
        return (
            f"SHORT BUDGET: the networks trained {trained} iterations (the paper: "
            f"{PAPER_ITERATIONS}); compare them with each other, not with the paper's numbers. "
            f"{TABLE2_TITLE}"
        )
    return TABLE2_TITLE


def cost_section(rows: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    """Table 2's cost section of `rows` (`reference_cost_rows`): ours beside the paper's ratios
    to SRResNet, one column per method."""
    return cost_table(
        rows,
        methods=methods,
        labels={metric: label for metric, _, label in REFERENCE_COST_METRICS},
        ratio_suffix=f"_vs_{COST_REFERENCE.lower()}",
        paper_devices={"latency_ms": "V100"},
    )


def tabulate(
    runs: Mapping[str, TrainedRun | None],
    testset_dir: str | os.PathLike[str],
    *,
    levels: Sequence[str] = LEVELS,
    device: torch.device | str,
    lpips: LPIPSMetric | LPIPSUnavailable | None,
    out_dir: str | os.PathLike[str],
    latency_size: int | Sequence[int] = (339, 510),
    latency_repeats: int = 20,
    latency_warmup: int = 5,
    config: Mapping[str, Any] | None = None,
) -> TableResult:
    """Table 2: the retrained networks on the test sets, then their cost measured here.

    `runs` maps a Table 2 column to its trained run (`run_plan` of `plan`; None: not
    provided). Writes
    `out_dir/table2.{csv,json,md}`: quality rows as Table 1, then the efficiency rows.
    """
    device = torch.device(device)
    methods = {
        name: None
        if run is None
        else Method.checkpoint(name=name, path=run.weights, paper_name=name)
        for name, run in runs.items()
    }
    models = {
        name: load_model(run.weights, device=device)
        for name, run in runs.items()
        if run is not None
    }
    quality = evaluate_methods(
        methods,
        testset_dir,
        levels=levels,
        device=device,
        lpips=lpips,
        paper=PAPER_TABLE2,
        upscalers={name: network_upscaler(model) for name, model in models.items()},
    )
    costs = reference_cost_rows(
        models,
        device=device,
        latency_size=latency_size,
        repeats=latency_repeats,
        warmup=latency_warmup,
    )
    rows = pd.concat([quality, costs], ignore_index=True)
    names = list(runs)
    tables = {
        "PSNR-Y (dB) and LPIPS": comparison_table(
            quality, metrics=QUALITY_METRICS, levels=levels, methods=names
        ),
        COST_HEADING: cost_section(rows, names),
    }
    metadata = run_metadata(
        config={
            **dict(config or {}),
            "runs": {
                name: None
                if run is None
                else {"run_dir": str(run.run_dir), "reused": run.reused, "message": run.message}
                for name, run in runs.items()
            },
            "testsets": testset_summary(testset_dir),
            "levels": list(levels),
            "lpips": lpips_description(lpips),
            "latency_size": list(latency_size)
            if not isinstance(latency_size, int)
            else [latency_size, latency_size],
            "latency_repeats": latency_repeats,
        },
        seed=read_testset_manifest(testset_dir).get("seed"),
        device=device,
    )
    return write_table(
        rows,
        tables,
        Path(out_dir) / "table2.csv",
        title=table2_title(
            {name: trained_iterations(run) for name, run in runs.items() if run is not None}
        ),
        notes=[QUALITY_NOTE, COST_NOTE],
        metadata=metadata,
    )
