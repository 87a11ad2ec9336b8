"""Table rendering, its one home: long-format result rows (`dasrlib.results`) as wide tables,
Markdown and notebook views.

- `comparison_table`: quality rows as "ours (n=N); paper P; diff D" per (test set, metric) and
  method (Tables 1 and 2), with `QUALITY_NOTE` saying how to read a cell.
- `cost_table`: cost rows as "ours (x r); paper P (x r)" per cost metric and method (Table 2).
- `wide_table`: any rows as numbers, one row per index tuple, one column per (metric, level)
  (the Fig. 4 ablations).
- `style_table`: a notebook view that greys the cells without a number.
- `markdown_table`, `write_table`: the Markdown of a table; the long rows (CSV + JSON sidecar by
  `dasrlib.results.write_results`) with their tables as ``<stem>.md``, returned as a `TableResult`.

Every experiment of `dasrlib.experiments` ends in `write_table`; what a table holds is decided
there, how it looks is decided here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dasrlib.evaluate import NOT_PROVIDED
from dasrlib.io import atomic_write_text
from dasrlib.paper import (
    LEVELS,
    METRIC_LPIPS,
    METRIC_PSNR,
    METRIC_SSIM,
    METRIC_V_MAE,
    PAPER_LEVEL_NAMES,
)
from dasrlib.results import EFFICIENCY_DATASET, project_path, write_results

__all__ = [
    "QUALITY_NOTE",
    "TableResult",
    "comparison_table",
    "cost_table",
    "markdown_table",
    "style_table",
    "wide_table",
    "write_table",
]

QUALITY_NOTE = (
    "cells: ours (n = images averaged); the paper's value; diff = ours - paper. PSNR-Y in dB "
    "(BT.601 Y, 4-pixel crop, 8-bit images), LPIPS AlexNet (RGB in [-1, 1], lower is better)"
)
"""How to read a `comparison_table` cell (a note of the Markdown files of Tables 1 and 2)."""

_DIGITS = {METRIC_PSNR: 2, METRIC_SSIM: 4, METRIC_LPIPS: 4, METRIC_V_MAE: 4}


def _fmt(value: float, digits: int) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def _cell(row: pd.Series, digits: int) -> str:
    paper = "" if pd.isna(row["paper_value"]) else f"paper {_fmt(row['paper_value'], digits)}"
    if pd.isna(row["value"]):
        reason = str(row["note"]) if row["note"] else "no value"
        return f"{reason}; {paper}" if paper else reason
    ours = f"{_fmt(row['value'], digits)} (n={int(row['n_images'])})"
    if not paper:
        return ours
    diff = row["value"] - row["paper_value"]
    return f"{ours}; {paper}; diff {diff:+.{digits}f}"


def comparison_table(
    frame: pd.DataFrame,
    *,
    metrics: Sequence[str] = (METRIC_PSNR, METRIC_LPIPS),
    levels: Sequence[str] = LEVELS,
    methods: Sequence[str] | None = None,
) -> pd.DataFrame:
    """A wide table of strings: rows (set, metric), one column per method.

    Each cell reads "ours (n=N); paper P; diff D" (D = ours - P), or the reason there is no number
    ("not provided", "n/a: weights not found at ...").
    """
    means = frame[frame["aggregate"] == "mean"]
    methods = list(methods) if methods is not None else list(dict.fromkeys(means["method"]))
    index = pd.MultiIndex.from_tuples(
        [(PAPER_LEVEL_NAMES.get(lv, lv), m) for lv in levels for m in metrics],
        names=["set", "metric"],
    )
    table = pd.DataFrame("", index=index, columns=methods)
    for _, row in means.iterrows():
        if (
            row["metric"] not in metrics
            or row["level"] not in levels
            or row["method"] not in methods
        ):
            continue
        key = (PAPER_LEVEL_NAMES.get(row["level"], row["level"]), row["metric"])
        table.loc[key, row["method"]] = _cell(row, _DIGITS.get(row["metric"], 4))
    table = table.fillna("")
    table[table == ""] = "missing"
    return table


def cost_table(
    rows: pd.DataFrame,
    *,
    methods: Sequence[str],
    labels: Mapping[str, str],
    ratio_suffix: str,
    paper_devices: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Rows: the cost metrics of `labels` (metric -> row label); columns: `methods`.

    A cell reads "ours (x r); paper P (x r)": the metric's value and its ratio row
    (``<metric><ratio_suffix>``) beside the paper's; ``paper_devices`` names the device of a
    paper value where it is not comparable across devices ({"latency_ms": "V100"}). A value that
    is NaN shows its note; a method without cost rows reads "not measured".
    """
    eff = rows[rows["dataset"] == EFFICIENCY_DATASET]
    devices = dict(paper_devices or {})
    table = pd.DataFrame("", index=pd.Index(list(labels.values()), name="cost"), columns=methods)
    for metric, label in labels.items():
        for method in methods:
            own = eff[(eff["method"] == method) & (eff["metric"] == metric)]
            ratio = eff[(eff["method"] == method) & (eff["metric"] == f"{metric}{ratio_suffix}")]
            if own.empty:
                table.loc[label, method] = "not measured"
                continue
            value, note = own["value"].iloc[0], own["note"].iloc[0]
            r = ratio["value"].iloc[0]
            ours = note if pd.isna(value) else f"{value:.2f} (x{r:.2f})"
            paper = own["paper_value"].iloc[0]
            if not pd.isna(paper):
                paper_r = ratio["paper_value"].iloc[0]
                device = f" {devices[metric]}" if metric in devices else ""
                ours += f"; paper{device} {paper:g} (x{paper_r:.2f})"
            table.loc[label, method] = ours
    return table


def wide_table(rows: pd.DataFrame, *, index: Sequence[str]) -> pd.DataFrame:
    """Numbers of `rows`, one row per `index` tuple (sorted by its first level, order kept
    within), one column per ``"<metric> <level>"`` (cost rows: per ``metric``)."""
    frame = rows.copy()
    frame["column"] = [
        metric if dataset == EFFICIENCY_DATASET else f"{metric} {level}"
        for metric, dataset, level in zip(
            frame["metric"], frame["dataset"], frame["level"], strict=True
        )
    ]
    table = frame.pivot_table(
        index=list(index), columns="column", values="value", aggfunc="first", sort=False
    )
    return table.sort_index(level=index[0])


def style_table(table: pd.DataFrame, *, caption: str = "") -> Any:
    """A pandas Styler of a table: cells without a number ("n/a ...", "not provided", "missing")
    are greyed."""

    def grey(cell: Any) -> str:
        text = str(cell)
        return "color: #888" if text.startswith(("n/a", NOT_PROVIDED, "missing")) else ""

    return table.style.map(grey).set_caption(caption)


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table of `table` (index levels become the first columns)."""
    flat = table.reset_index()
    header = [str(c) for c in flat.columns]

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(cell(h) for h in header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for record in flat.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in record) + " |")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class TableResult:
    """What an experiment's tabulation wrote: long rows (CSV), the rendered tables by heading,
    the file paths."""

    rows: pd.DataFrame
    tables: dict[str, pd.DataFrame]
    csv_path: Path
    markdown_path: Path
    title: str = ""
    """The first line of the markdown file (without ``# ``): a smoke run says so here."""


def write_table(
    rows: pd.DataFrame,
    tables: Mapping[str, pd.DataFrame],
    csv_path: str | os.PathLike[str],
    *,
    title: str,
    notes: Sequence[str],
    metadata: Mapping[str, Any],
    contents: str = "long format, per image and means",
) -> TableResult:
    """Write the long rows (CSV + JSON sidecar, `dasrlib.results.write_results`) and the
    rendered tables (`<stem>.md`: `title`, provenance, `notes`, one section per table)."""
    csv_path = project_path(csv_path)
    write_results(rows, csv_path, metadata=metadata)
    device = metadata.get("device", {})
    lines = [
        f"# {title}",
        "",
        f"- data: `{csv_path.name}` ({contents}) and `{csv_path.stem}.json`",
        f"- commit: {metadata.get('git_commit')} (dirty: {metadata.get('git_dirty')})",
        f"- device: {device.get('device')} {device.get('gpu_name') or ''}".rstrip(),
        f"- written: {metadata.get('timestamp_utc')}",
        *[f"- {note}" for note in notes],
        "",
    ]
    for heading, table in tables.items():
        lines += [f"## {heading}", "", markdown_table(table), ""]
    markdown_path = csv_path.with_suffix(".md")
    atomic_write_text(markdown_path, "\n".join(lines))
    return TableResult(
        rows=rows,
        tables=dict(tables),
        csv_path=csv_path,
        markdown_path=markdown_path,
        title=title,
    )
