"""Publish a budget into ``results/models/``: what every consumer of the trained models reads.

Files (each written atomically):

- ``dasr/model.safetensors``, ``srresnet/model.safetensors``: fp16 EMA weights (`load_model`
  rebuilds them from their metadata); the SRResNet folder holds the pretrain until the baseline
  exists;
- ``history.json``: every budget's record and the state the next budget continues from;
- ``eval.csv`` (+ ``eval.json``): bicubic, SRResNet and DASR per image and per set;
  ``eval_gaps.csv``: DASR minus SRResNet, paired per image, with 95 % confidence intervals;
  ``eval_history.csv``: every budget's mean rows and gaps;
- ``curves/metrics_<role>.csv``, ``curves/val_<role>.csv`` and ``curves.png``;
- the figures drawn with these weights (`dasrlib.campaign.figures`): ``real_images.png`` and,
  with a DASR, ``fig5_sweep.png`` / ``fig5_sweep.csv``; with DASR and its baseline,
  ``table2.{csv,json,md}`` (`dasrlib.campaign.tables`: Table 2 at this scale, with cost);
- ``README.md``: the model card.

A budget is published only if it continued the published state (`PublishRefused` otherwise).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from dasrlib.campaign.figures import FIGURE_FILES
from dasrlib.campaign.tables import TABLE2_FILES
from dasrlib.io import atomic_write, atomic_write_text
from dasrlib.models.checkpoints import load_model
from dasrlib.results import project_path, write_results
from dasrlib.tables import markdown_table

__all__ = ["HISTORY_FORMAT", "PublishRefused", "publish_budget", "read_history"]

logger = logging.getLogger(__name__)

HISTORY_FORMAT = "dasrlib-campaign/1"


class PublishRefused(RuntimeError):
    """A budget that did not start from the published state (another branch of the history)."""


def read_history(models_dir: Path) -> dict[str, Any]:
    """``history.json`` of `models_dir`, or an empty history (no budget published yet)."""
    path = models_dir / "history.json"
    if not path.is_file():
        return {"format": HISTORY_FORMAT, "budgets": [], "state": {}}
    history = json.loads(path.read_text(encoding="utf-8"))
    if history.get("format") != HISTORY_FORMAT:
        raise ValueError(f"{path}: format {history.get('format')!r}, expected {HISTORY_FORMAT!r}")
    return history


def _copy(source: Path, target: Path) -> None:
    with atomic_write(target) as tmp:
        shutil.copyfile(source, tmp)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_write(path) as tmp:
        frame.to_csv(tmp, index=False)


def _append_curves(record: dict[str, Any], curves: Path) -> None:
    """This budget's metrics.csv / val.csv rows of every run it trained (those past the role's
    published iteration, including rows of an unpublished earlier call), appended per role."""
    for run in record["runs"]:
        run_dir = project_path(run["run_dir"])
        for kind in ("metrics", "val"):
            source = run_dir / f"{kind}.csv"
            if not source.is_file() or not source.stat().st_size:
                continue
            rows = pd.read_csv(source)
            rows = rows[rows["iteration"] > run["published_iteration"]]
            rows.insert(0, "budget", record["budget"])
            rows.insert(1, "run", run["run"])
            path = curves / f"{kind}_{run['role']}.csv"
            if path.is_file():
                old = pd.read_csv(path)
                rows = pd.concat([old[old["budget"] != record["budget"]], rows], ignore_index=True)
            _write_csv(rows, path)


def _curves_png(curves: Path, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 3.8), dpi=100)
    for index, role in enumerate(("pretrain", "baseline", "dasr")):
        metrics = curves / f"metrics_{role}.csv"
        if metrics.is_file():
            rows = pd.read_csv(metrics)
            ax_loss.plot(rows["iteration"], rows["loss_pixel"], color=f"C{index}", lw=1, label=role)
        val = curves / f"val_{role}.csv"
        if val.is_file():
            rows = pd.read_csv(val)
            gain = rows["psnr_y_db"] - rows["bicubic_psnr_y_db"]
            mean = gain.groupby(rows["iteration"]).mean()
            ax_val.plot(mean.index, mean.values, "o-", color=f"C{index}", label=role)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("iteration of the stage")
    ax_loss.set_ylabel("L1 pixel loss (mean over the log interval)")
    ax_val.set_xlabel("iteration of the stage")
    ax_val.set_ylabel("held-out PSNR-Y gain over bicubic\n(dB, mean of the levels)")
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        with atomic_write(out_png) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)


def _gap_note(gaps: pd.DataFrame, previous: pd.DataFrame | None) -> list[str]:
    """Lines: DASR minus SRResNet PSNR-Y per set and level, with CI and the change since the
    last budget that had both models."""
    psnr = gaps[gaps["metric"] == "psnr_y_db"]
    if not len(psnr):
        return ["No DASR minus SRResNet difference yet (DASR is not trained)."]
    lines = ["DASR minus SRResNet, PSNR-Y (dB), paired per image, 95 % CI:", ""]
    rows = []
    for row in psnr.itertuples():
        change = "first"
        if previous is not None and len(previous):
            old = previous[
                (previous["dataset"] == row.dataset)
                & (previous["level"] == row.level)
                & (previous["metric"] == "psnr_y_db")
            ]
            if len(old):
                change = f"{row.mean - float(old['mean'].iloc[0]):+.3f}"
        rows.append(
            {
                "dataset": row.dataset,
                "level": row.level,
                "difference": f"{row.mean:+.3f} [{row.ci95_low:+.3f}, {row.ci95_high:+.3f}]",
                "n": row.n_images,
                "change since last": change,
            }
        )
    lines.append(markdown_table(pd.DataFrame(rows).set_index(["dataset", "level"])))
    return lines


def _spread_text(spread: float) -> str:
    return (
        f"DASR's experts: relative spread {spread:.1e} (max over experts of |e_i - mean| / "
        "|mean|; 0 would make DASR one SRResNet)"
    )


def _budget_note(record: dict[str, Any], gap_lines: list[str]) -> str:
    lines = [f"### Budget {record['budget']} ({record['time_utc']})", ""]
    lines.append(
        f"Commit {record.get('commit') or '?'}; {record['device']}; {record['precision']}; "
        f"{record['wall_s']:.0f} s in all ({record['train_wall_s']:.0f} s training, "
        f"{record['eval_wall_s']:.0f} s evaluation) of a {record['budget_s']:.0f} s budget."
    )
    lines.append("")
    for run in record["runs"]:
        rate = run.get("it_per_s")
        lines.append(
            f"- {run['role']} ({run['run']}, {run['continued']}): iterations "
            f"{run['published_iteration']} -> {run['end_iteration']}"
            + (
                f" (this call from {run['start_iteration']}, an unpublished call's checkpoint)"
                if run["start_iteration"] != run["published_iteration"]
                else ""
            )
            + (f", {rate:.2f} it/s" if rate else "")
            + f", {run['wall_s']:.0f} s"
        )
    if "expert_spread" in record:
        lines.append(f"- {_spread_text(record['expert_spread'])}")
    for text in record.get("notes", []):
        lines.append(f"- {text}")
    lines += ["", *gap_lines]
    return "\n".join(lines) + "\n"


def _model_card(history: dict[str, Any], means: pd.DataFrame, gaps: pd.DataFrame) -> str:
    budgets = history["budgets"]
    state = history["state"]
    plan = budgets[-1]["plan"]
    wall = sum(float(b["wall_s"]) for b in budgets)
    spread = budgets[-1].get("expert_spread")
    iters = {role: state.get(role, {}).get("iterations", 0) for role in state}
    per_budget = ", ".join(
        f"{b['budget']}: "
        + " / ".join(
            f"{r['role']} +{r['end_iteration'] - r['published_iteration']}" for r in b["runs"]
        )
        for b in budgets
    )
    lines = [
        "# Trained models: DASR (N = 5) and its equal-iteration SRResNet",
        "",
        "Trained with `python -m dasrlib.campaign run --budget ...`, a wall-clock budget at a "
        "time (docs/campaign.md). `dasr upscale`, the slider notebook and the tables load "
        "`dasr/model.safetensors`.",
        "",
        "| | |",
        "|---|---|",
        f"| data | `{plan['data_root']}` (every image at least one patch wide), "
        f"{plan['val_images']} held out for validation; evaluation on "
        f"{', '.join(plan['eval_sets'])} only |",
        f"| iterations | pretrain {iters.get('pretrain', 0)} of {plan['pretrain_iterations']}; "
        f"DASR {iters.get('dasr', 0)} and SRResNet baseline {iters.get('baseline', 0)} of "
        f"{plan['stage_iterations']} each |",
        f"| per budget | {per_budget} |",
        f"| batch, patch | {plan['batch_size']} x {plan['patch_size']}^2 HR patches (LR "
        f"{plan['patch_size'] // 4}); levels weak / standard / severe drawn 0.3 / 0.3 / 0.4 |",
        "| losses | L1 pixel against the USM-sharpened HR; DASR adds 1.0 x L1 regression on v |",
        f"| optimiser | Adam, betas (0.9, 0.99), lr {plan['pretrain_lr']} (pretrain) and "
        f"{plan['lr']} (DASR, baseline), constant; EMA 0.999 (the published weights) |",
        f"| networks | SRResNet {plan['num_feat']} channels, {plan['num_block']} blocks; DASR "
        f"N = {plan['num_experts']} such experts, predictor and linear weighting |",
        f"| experts | {_spread_text(spread) if spread is not None else 'not recorded'} |",
        f"| hardware, precision | {budgets[-1]['device']}; {budgets[-1]['precision']} |",
        f"| wall time | {wall / 3600:.2f} h over {len(budgets)} budget(s) |",
        f"| commit | {budgets[-1].get('commit') or '?'} |",
        "",
        f"Deviations from the paper (Sec. 4.1): HR patch {plan['patch_size']} (LR "
        f"{plan['patch_size'] // 4}) and batch {plan['batch_size']} instead of 256 (LR 64) and 24; "
        f"{plan['pretrain_iterations']} pretrain + {plan['stage_iterations']} iterations "
        "per stage planned instead of 500 K; constant learning rates; the training images of "
        f"`{plan['data_root']}` instead of DIV2K + Flickr2K + OST; the PSNR-oriented stage only "
        "(no perceptual or GAN loss yet); evaluation on "
        f"{', '.join(plan['eval_sets'])} instead of the DIV2K validation images.",
        "",
        "Known limits: far from the paper's training length; a budget that starts on a machine "
        "without the previous checkpoint restarts Adam from the published fp16 weights (the "
        "iteration count continues; history.json says which runs did); Set5 has 5 images, so "
        "its confidence intervals are wide.",
        "",
    ]
    if len(means):
        shown = means[means["metric"].isin(["psnr_y_db", "ssim_y", "lpips_alex", "v_mae"])]
        table = shown.pivot_table(
            index=["dataset", "level"], columns=["metric", "method"], values="value"
        )
        table.columns = [f"{m} {method}" for m, method in table.columns]
        lines += ["## Evaluation (eval.csv, means)", "", markdown_table(table.round(4)), ""]
    drawn = {**budgets[-1].get("figures", {}), **budgets[-1].get("tables", {})} if budgets else {}
    if drawn:
        lines += ["## Figures and tables of these weights", ""]
        if "real_images.png" in drawn:
            lines.append("- `real_images.png`: real LR photos (RealSRSet), x4, side by side.")
        if "fig5_sweep.png" in drawn:
            lines.append(
                "- `fig5_sweep.png` / `fig5_sweep.csv`: Fig. 5 measured; what more blur and "
                "more noise in the edited v do to the output's detail."
            )
        if "table2.md" in drawn:
            lines.append(
                "- `table2.md` / `table2.csv`: Table 2 at this scale, the SRResNet and DASR "
                "above at equal iterations, with their cost measured here."
            )
        lines.append("")
    lines += ["## Budgets", ""]
    lines += [b["note"] for b in reversed(budgets)]
    return "\n".join(lines)


def publish_budget(record: dict[str, Any], rows: pd.DataFrame, models_dir: Path) -> dict[str, Any]:
    """Publish one budget (`record` from `dasrlib.campaign.run`, `rows` its evaluation) into
    `models_dir`; returns the record with its note. Raises `PublishRefused` when the budget did
    not start from the published state."""
    from dasrlib.evaluate import paired_differences

    history = read_history(models_dir)
    if record["state_before"] != history["state"]:
        raise PublishRefused(
            f"this budget started from {record['state_before']} but {models_dir / 'history.json'} "
            f"is at {history['state']}: it does not continue the published history"
        )
    record["budget"] = len(history["budgets"]) + 1
    for name, path in record["weights"].items():
        _copy(project_path(path), models_dir / name / "model.safetensors")
    if "dasr" in record["weights"]:
        record["expert_spread"] = load_model(
            models_dir / "dasr" / "model.safetensors"
        ).expert_spread()
    drawn = {**record.get("figures", {}), **record.get("tables", {})}
    for name in (*FIGURE_FILES, *TABLE2_FILES):  # of these weights, or removed (never older)
        if name in drawn:
            _copy(project_path(drawn[name]), models_dir / name)
        else:
            (models_dir / name).unlink(missing_ok=True)

    gaps = paired_differences(rows, minuend="dasr", subtrahend="srresnet")
    means = rows[rows["aggregate"] == "mean"]
    write_results(
        rows.assign(paper_value=float("nan")),
        models_dir / "eval.csv",
        metadata={
            "budget": record["budget"],
            "commit": record.get("commit"),
            "state": record["state_after"],
            "testsets": record["testsets"],
            "note": "per image (aggregate=image) and per set (aggregate=mean); see eval_gaps.csv",
        },
    )
    _write_csv(gaps, models_dir / "eval_gaps.csv")
    history_path = models_dir / "eval_history.csv"
    old = pd.read_csv(history_path) if history_path.is_file() else None
    previous = None
    if old is not None and len(old[old["method"] == "dasr_minus_srresnet"]):
        gap_rows = old[old["method"] == "dasr_minus_srresnet"]
        previous = gap_rows[gap_rows["budget"] == gap_rows["budget"].max()].rename(
            columns={"value": "mean"}
        )
    tagged = pd.concat(
        [
            means.loc[:, ["method", "dataset", "level", "metric", "value", "n_images"]],
            gaps.rename(columns={"mean": "value"}).assign(method="dasr_minus_srresnet"),
        ],
        ignore_index=True,
    )
    tagged.insert(0, "budget", record["budget"])
    for role, entry in record["state_after"].items():
        tagged[f"{role}_iterations"] = entry["iterations"]
    _write_csv(tagged if old is None else pd.concat([old, tagged], ignore_index=True), history_path)

    curves = models_dir / "curves"
    curves.mkdir(parents=True, exist_ok=True)
    _append_curves(record, curves)
    _curves_png(curves, models_dir / "curves.png")

    record["note"] = _budget_note(record, _gap_note(gaps, previous))
    history["budgets"].append(record)
    history["state"] = record["state_after"]
    atomic_write_text(
        models_dir / "history.json", json.dumps(history, indent=1, default=str) + "\n"
    )
    atomic_write_text(models_dir / "README.md", _model_card(history, means, gaps))
    logger.info("published budget %d into %s", record["budget"], models_dir)
    return record
