"""The campaign's models in the paper's tables, labelled with their training scale: Table 2's
SRResNet and DASR rows at equal iterations with their cost (Sec. 4.3), and Table 1's DASR column
(Sec. 4.2: `published_column` and `with_published_column`, for scripts/table1_shared_summary.py).

Both tables take their quality rows from the budget's own evaluation (`eval.csv`, the Table 1
protocol on the seeded test sets), so a model is evaluated once. `write_budget_table2` runs inside
the evaluation window (its latency is measured then, so the next budget reserves the time);
`dasrlib.campaign.publish` copies its files beside the weights.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from dasrlib.campaign.plan import CampaignPlan
from dasrlib.evaluate import QUALITY_METRICS
from dasrlib.experiments.cost import reference_cost_rows
from dasrlib.experiments.table2 import (
    COST_HEADING,
    COST_NOTE,
    PAPER_ITERATIONS,
    cost_section,
    table2_title,
)
from dasrlib.io import file_sha256
from dasrlib.models.checkpoints import CheckpointError, load_model
from dasrlib.paper import METRIC_PSNR, PAPER_TABLE2, PaperTable, paper_value
from dasrlib.results import project_path, run_metadata
from dasrlib.tables import QUALITY_NOTE, comparison_table, write_table

__all__ = [
    "SAME_TESTSETS_DB",
    "TABLE2_FILES",
    "PublishedColumn",
    "published_column",
    "training_scale",
    "with_published_column",
    "write_budget_table2",
    "write_published_table2",
]

logger = logging.getLogger(__name__)

TABLE2_FILES = ("table2.csv", "table2.json", "table2.md")
"""The files of `write_budget_table2`, published beside the weights (or removed: never older)."""

_TABLE2_COLUMNS = {"srresnet": "SRResNet", "dasr": "DASR"}
"""Evaluation method name -> Table 2 column (the SRResNet is the equal-iteration baseline)."""


def _published_rows(
    rows: pd.DataFrame, *, method: str, column: str, paper: PaperTable
) -> pd.DataFrame:
    """The evaluation rows of `method` (per image and mean) as the table column `column`, with
    the paper's value of `column` beside each mean."""
    own = rows[rows["method"] == method].copy()
    own["method"] = column
    own["paper_value"] = [
        paper_value(paper, column, level, metric) if aggregate == "mean" else float("nan")
        for level, metric, aggregate in zip(
            own["level"], own["metric"], own["aggregate"], strict=True
        )
    ]
    return own.reset_index(drop=True)


@dataclass(frozen=True)
class PublishedColumn:
    """A published model's evaluation as a table column: its `rows`, the test-set folder of
    each data set it was evaluated on (`testsets`), its training scale (`scale`), and the
    bicubic means of the same evaluation (`bicubic`: the check that two evaluations saw the
    same test images)."""

    rows: pd.DataFrame
    testsets: dict[str, Path]
    scale: str
    bicubic: pd.DataFrame


SAME_TESTSETS_DB = 0.01
"""Largest bicubic PSNR-Y difference (dB, any level) between two evaluations of one test-set
folder that still counts as the same test images: rebuilt on another CPU, a few LR pixels may
round one 8-bit level apart (a shift of about 1e-5 dB); other images differ by far more."""


def _published(models_dir: Path) -> tuple[dict[str, Any], str]:
    """``history.json`` of `models_dir` and the training scale of what it publishes."""
    from dasrlib.campaign.publish import read_history  # publish imports TABLE2_FILES from here

    history = read_history(models_dir)
    budgets = history["budgets"]
    scale = training_scale(budgets[-1]["plan"], history["state"], len(budgets)) if budgets else ""
    return history, scale


def published_column(
    models_dir: Path, *, method: str, column: str, paper: PaperTable
) -> PublishedColumn | None:
    """The evaluation of `method` published in `models_dir` (``eval.csv`` and its sidecar) as
    the column `column`; None before a budget has published that model, or when the
    evaluation's files cannot be read (logged)."""
    eval_csv = models_dir / "eval.csv"
    if not eval_csv.is_file():
        return None
    try:
        sidecar = json.loads(eval_csv.with_suffix(".json").read_text(encoding="utf-8"))
        testsets = {
            name: project_path(folder).resolve() for name, folder in sidecar["testsets"].items()
        }
        rows = pd.read_csv(eval_csv)
        history, scale = _published(models_dir)
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning("%s: not readable as a published evaluation (%s)", eval_csv, error)
        return None
    if method not in set(rows["method"]) or not history["budgets"]:
        return None
    return PublishedColumn(
        rows=_published_rows(rows, method=method, column=column, paper=paper),
        testsets=testsets,
        scale=scale,
        bicubic=rows[(rows["method"] == "bicubic") & (rows["aggregate"] == "mean")],
    )


def with_published_column(
    rows: pd.DataFrame, testsets_dir: str | Path, published: PublishedColumn | None
) -> tuple[pd.DataFrame, str | None]:
    """`rows` of a table run on `testsets_dir` (with a "Bicubic" column) with the published
    model's rows as its column; and a note saying so, or why not (None: not applicable).

    The column is taken where the run has no values for it, the published evaluation used the
    same test-set folder, its bicubic PSNR-Y agrees with the run's within `SAME_TESTSETS_DB`
    at every level both evaluated, and it has a value for every (level, metric) the run's
    bicubic has (a column with holes would leave the whole set out of the table)."""
    if published is None:
        return rows, None
    column = str(published.rows["method"].iloc[0])
    if rows.loc[rows["method"] == column, "value"].notna().any():
        return rows, None
    folder = project_path(testsets_dir).resolve()
    name = next((n for n, path in published.testsets.items() if path == folder), None)
    if name is None:
        return rows, None
    refused = f"{column} not taken from the published evaluation"
    ours = rows[
        (rows["method"] == "Bicubic") & (rows["aggregate"] == "mean") & rows["value"].notna()
    ]
    theirs = published.bicubic[published.bicubic["dataset"] == name]
    both = ours.merge(theirs, on=["level", "metric"], suffixes=("", "_published"))
    both = both[both["metric"] == METRIC_PSNR]
    if both.empty:
        return rows, f"{refused}: no bicubic PSNR-Y of both to compare"
    apart = float((both["value"] - both["value_published"]).abs().max())
    if apart > SAME_TESTSETS_DB:
        return rows, (
            f"{refused}: its bicubic PSNR-Y differs from this run's by up to {apart:.3f} dB "
            f"(other test images in {testsets_dir})"
        )
    own = published.rows[published.rows["dataset"] == name]
    means = own[(own["aggregate"] == "mean") & own["value"].notna()]
    missing = set(zip(ours["level"], ours["metric"], strict=True)) - set(
        zip(means["level"], means["metric"], strict=True)
    )
    if missing:
        cells = ", ".join(sorted(f"{level} {metric}" for level, metric in missing))
        return rows, f"{refused}: it has no value for {cells}"
    note = (
        f"{column} is the published model ({published.scale}): its rows are the campaign's "
        f"evaluation of these test sets ({testsets_dir}; eval.csv beside the weights, whose "
        f"bicubic PSNR-Y differs from this run's by at most {apart:.1e} dB over the "
        f"{len(both)} levels). The paper's {column} values are of its GAN-trained model: "
        "a PSNR-oriented model is expected above them in PSNR-Y and below in LPIPS"
    )
    return pd.concat([rows[rows["method"] != column], own[rows.columns]], ignore_index=True), note


def training_scale(plan: Mapping[str, Any], state: Mapping[str, Any], budget: int) -> str:
    """One line on how far the published models are trained (a table's label for them)."""

    def reached(role: str) -> int:
        return int(state.get(role, {}).get("iterations", 0))

    overrides = plan.get("train_overrides") or {}
    extra = [
        f"{name} {overrides[name]}"
        for name in ("perceptual_weight", "adversarial_weight")
        if float(overrides.get(name) or 0.0)
    ]
    return (
        f"campaign budget {budget}: SRResNet pretrained {reached('pretrain')} iterations, then "
        f"DASR {reached('dasr')} and its SRResNet baseline {reached('baseline')} of "
        f"{plan['stage_iterations']} (the paper: {PAPER_ITERATIONS}); HR patch "
        f"{plan['patch_size']}, batch {plan['batch_size']}, pixel loss (+ regression on v for "
        f"DASR){', ' + ', '.join(extra) if extra else ', no perceptual or GAN loss'}"
    )


def write_budget_table2(
    rows: pd.DataFrame,
    models: Mapping[str, Path],
    out_dir: Path,
    *,
    plan: Mapping[str, Any],
    state: Mapping[str, Any],
    budget: int,
    device: torch.device,
) -> dict[str, Path]:
    """Table 2 of the equal-iteration SRResNet and DASR (`models`: {"srresnet", "dasr"} of
    budget `budget`, at `state`; `plan`: `CampaignPlan.record()`) into
    ``out_dir/table2.{csv,json,md}``; {published name: file}, empty before DASR and its
    baseline exist or when the table cannot be written (logged: it never costs a budget).

    Quality: `rows` (the budget's evaluation), one section per evaluation set, the paper's
    values beside. Cost: `reference_cost_rows` measured here, latency at the plan's
    ``table2_latency_size``."""
    if set(models) != set(_TABLE2_COLUMNS) or not {"dasr", "baseline"} <= set(state):
        return {}
    try:
        return _write_table2(rows, models, out_dir, plan, state, budget, device)
    except (OSError, ValueError, RuntimeError, CheckpointError) as error:
        logger.warning("Table 2 not written: %s", error)
        return {}


def write_published_table2(models_dir: Path, *, device: torch.device) -> dict[str, Path]:
    """`write_budget_table2` for the models published in `models_dir`, into `models_dir` (for a
    budget published before Table 2 was part of one; the model card lists it from the next
    budget on). ValueError before DASR and its baseline are published."""
    history, _ = _published(models_dir)
    if not {"dasr", "baseline"} <= set(history["state"]):
        raise ValueError(f"{models_dir}: no DASR and equal-iteration SRResNet published yet")
    models = {name: models_dir / name / "model.safetensors" for name in _TABLE2_COLUMNS}
    return _write_table2(
        pd.read_csv(models_dir / "eval.csv"),
        models,
        models_dir,
        history["budgets"][-1]["plan"],
        history["state"],
        len(history["budgets"]),
        device,
    )


def _write_table2(
    rows: pd.DataFrame,
    models: Mapping[str, Path],
    out_dir: Path,
    plan: Mapping[str, Any],
    state: Mapping[str, Any],
    budget: int,
    device: torch.device,
) -> dict[str, Path]:
    defaults = CampaignPlan()  # a budget recorded before the latency fields takes their defaults
    latency_size = tuple(plan.get("table2_latency_size", defaults.table2_latency_size))
    latency_repeats = int(plan.get("table2_latency_repeats", defaults.table2_latency_repeats))
    levels = list(plan["eval_levels"])
    scale = training_scale(plan, state, budget)
    quality = pd.concat(
        [
            _published_rows(rows, method=m, column=c, paper=PAPER_TABLE2)
            for m, c in _TABLE2_COLUMNS.items()
        ],
        ignore_index=True,
    )
    names = list(_TABLE2_COLUMNS.values())
    networks = {
        column: load_model(models[m], device=device) for m, column in _TABLE2_COLUMNS.items()
    }
    costs = reference_cost_rows(
        networks,
        device=device,
        latency_size=latency_size,
        repeats=latency_repeats,
        warmup=1,
    )
    table_rows = pd.concat([quality, costs], ignore_index=True)
    tables = {
        f"{dataset}: PSNR-Y (dB) and LPIPS": comparison_table(
            quality[quality["dataset"] == dataset],
            metrics=QUALITY_METRICS,
            levels=levels,
            methods=names,
        )
        for dataset in dict.fromkeys(quality["dataset"])
    }
    tables[COST_HEADING] = cost_section(table_rows, names)
    result = write_table(
        table_rows,
        tables,
        out_dir / "table2.csv",
        title=table2_title(
            {"SRResNet": state["baseline"]["iterations"], "DASR": state["dasr"]["iterations"]}
        ),
        notes=[
            f"models: the published `srresnet` and `dasr` beside this table ({scale})",
            "quality: the budget's evaluation (eval.csv; DASR minus SRResNet paired per image "
            "with 95 % confidence intervals in eval_gaps.csv); the paper's values are on the "
            "DIV2K validation images, a reference, not a target",
            QUALITY_NOTE,
            COST_NOTE,
        ],
        metadata=run_metadata(
            config={
                "scale": scale,
                "weights_sha256": {m: file_sha256(path) for m, path in models.items()},
                "levels": levels,
                "latency_size": list(latency_size),
                "latency_repeats": latency_repeats,
            },
            device=device,
        ),
    )
    logger.info("Table 2 of this budget written to %s", result.markdown_path)
    return {name: out_dir / name for name in TABLE2_FILES}
