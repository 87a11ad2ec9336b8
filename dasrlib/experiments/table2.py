"""Table 2 (Sec. 4.3): backbones retrained on the DASR degradation space with one budget, then
evaluated on the seeded test sets and profiled on this device.

`table2_configs` plans the runs with `dasrlib.experiments.runs` (one shared budget; DASR's experts
start from an SRResNet pretrained with the pixel loss; run names carry the resume hash), and
`run_planned` trains or loads them. `table2` evaluates the trained networks and adds their cost
(`efficiency_rows`, measured by `dasrlib.experiments.cost.measure_cost`) with ratios to SRResNet
beside the paper's V100 ratios; it writes ``table2.{csv,json,md}``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from dasrlib.evaluate import (
    QUALITY_METRICS,
    QUALITY_NOTE,
    TableResult,
    comparison_table,
    evaluate_methods,
    lpips_description,
    write_table,
)
from dasrlib.experiments.cost import measure_cost
from dasrlib.experiments.runs import NetworkRun, Pretraining, RunNaming, TrainedRun, plan_runs
from dasrlib.methods import Method, network_upscaler
from dasrlib.metrics import LPIPSMetric, LPIPSUnavailable
from dasrlib.models.checkpoints import load_model
from dasrlib.paper import LEVELS, PAPER_TABLE2, PAPER_TABLE2_EFFICIENCY
from dasrlib.results import RESULT_COLUMNS, run_metadata
from dasrlib.testsets import read_testset_manifest, testset_summary
from dasrlib.train.config import TrainConfig
from dasrlib.train.state import latest_iteration, read_run_config

__all__ = [
    "EFFICIENCY_METRICS",
    "EFFICIENCY_REFERENCE",
    "PAPER_ITERATIONS",
    "SMOKE_ITERATIONS",
    "TABLE2_TRAINING",
    "efficiency_rows",
    "efficiency_table",
    "table2",
    "table2_configs",
    "table2_title",
    "trained_iterations",
]

TABLE2_TITLE = "Table 2: backbones retrained on the DASR degradation space"
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

EFFICIENCY_METRICS: tuple[tuple[str, str, str], ...] = (
    ("params_m", "params_m", "parameters (M), all experts of DASR"),
    ("gmacs_256", "gmacs", "GMACs of one 256x256 LR input (inference path)"),
    ("latency_ms", "latency_ms", "median latency (ms), fp32, batch 1"),
    ("peak_mem_mb", "peak_mem_mb", "peak GPU memory (MB) of the latency runs"),
)
"""(metric name in the CSV, key of PAPER_TABLE2_EFFICIENCY, meaning)."""

EFFICIENCY_REFERENCE = "SRResNet"
"""Efficiency ratios divide by this column (the paper's timings are on a V100, ours are not)."""


TABLE2_NAMING = RunNaming(prefix="table2", hashed=True)
"""Table 2 run folders: ``table2_<method>_<resume hash>``, ``table2_dasr_pretrain_<hash>``."""

_DASR_PRETRAINING = Pretraining(role="dasr_pretrain", backbone="srresnet")


def table2_configs(
    budget: Mapping[str, Any],
    *,
    methods: Sequence[str] = tuple(TABLE2_TRAINING),
    dasr_pretrain_iterations: int,
) -> dict[str, list[TrainConfig]]:
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


def efficiency_rows(
    models: Mapping[str, nn.Module],
    *,
    device: torch.device | str,
    latency_size: int | Sequence[int],
    repeats: int,
    warmup: int,
) -> pd.DataFrame:
    """Table 2's cost rows measured here: parameters, GMACs at 256x256, latency, peak memory.

    GMACs are counted on a `meta` copy at 256x256 (as the paper; no compute). Latency and peak
    memory are measured on `device` at `latency_size` (paper: the DIV2K validation LR inputs,
    mostly 339x510; peak memory only on CUDA). Each metric also gets a `<metric>_vs_srresnet`
    row: ours / ours of SRResNet beside the paper's ratio, the comparable number across devices.
    """
    device = torch.device(device)
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
    reference = measured.get(EFFICIENCY_REFERENCE)
    paper_ref = PAPER_TABLE2_EFFICIENCY[EFFICIENCY_REFERENCE]
    for name, values in measured.items():
        paper = PAPER_TABLE2_EFFICIENCY.get(name)
        for metric, paper_key, _ in EFFICIENCY_METRICS:
            value = values[metric]
            note = notes[name] if metric in ("latency_ms", "peak_mem_mb") else ""
            if metric == "peak_mem_mb" and math.isnan(value):
                note = f"n/a: peak memory is measured on CUDA only (ran on {device.type})"
            base = {
                "method": name,
                "dataset": "efficiency",
                "level": "",
                "image": "",
                "aggregate": "mean",
            }
            rows.append(
                {
                    **base,
                    "metric": metric,
                    "value": value,
                    "n_images": 1,
                    "paper_value": math.nan if paper is None else float(paper[paper_key]),
                    "note": note,
                }
            )
            ratio = math.nan if reference is None else value / reference[metric]
            rows.append(
                {
                    **base,
                    "metric": f"{metric}_vs_srresnet",
                    "value": ratio,
                    "n_images": 1,
                    "paper_value": math.nan
                    if paper is None
                    else float(paper[paper_key]) / float(paper_ref[paper_key]),
                    "note": "" if reference is not None else "n/a: SRResNet not measured",
                }
            )
    return pd.DataFrame(rows, columns=[*RESULT_COLUMNS, "image", "aggregate", "note"])


def efficiency_table(rows: pd.DataFrame, *, methods: Sequence[str]) -> pd.DataFrame:
    """Rows: cost metrics; columns: methods; cells "ours (x r); paper V100 P (x r)"."""
    eff = rows[rows["dataset"] == "efficiency"]
    labels = [label for _, _, label in EFFICIENCY_METRICS]
    table = pd.DataFrame("", index=pd.Index(labels, name="cost"), columns=list(methods))
    for metric, _, label in EFFICIENCY_METRICS:
        for method in methods:
            own = eff[(eff["method"] == method) & (eff["metric"] == metric)]
            ratio = eff[(eff["method"] == method) & (eff["metric"] == f"{metric}_vs_srresnet")]
            if own.empty:
                table.loc[label, method] = "not measured"
                continue
            value, note = own["value"].iloc[0], own["note"].iloc[0]
            r = ratio["value"].iloc[0]
            ours = note if pd.isna(value) else f"{value:.2f} (x{r:.2f})"
            paper = own["paper_value"].iloc[0]
            if not pd.isna(paper):
                paper_r = ratio["paper_value"].iloc[0]
                ours += (
                    f"; paper{' V100' if metric == 'latency_ms' else ''} {paper:g} (x{paper_r:.2f})"
                )
            table.loc[label, method] = ours
    return table


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


def table2(
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

    `runs` maps a Table 2 column to its trained run (None: not provided). Writes
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
    costs = efficiency_rows(
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
        "Cost (measured on this device; ratios to SRResNet beside the paper's)": (
            efficiency_table(rows, methods=names)
        ),
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
        notes=[
            QUALITY_NOTE,
            "cost: GMACs at a 256x256 LR input; latency and memory on this device (the paper's "
            "are a V100's), so compare the ratios to SRResNet",
        ],
        metadata=metadata,
    )
