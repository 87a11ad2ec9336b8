"""Publish what a lease returned into ``results/models/`` (run here, after the device call).

Writes ``dasr/model.safetensors``, ``srresnet/model.safetensors`` (fp16, as returned),
``history.json`` (every lease's record and the state the next lease continues from),
``eval.csv`` (+ JSON sidecar: this lease's mean rows), ``eval_history.csv`` (every lease's rows),
``curves/*.csv`` and ``curves.png`` (losses and held-out PSNR-Y across leases),
``logs/lease_NNN.tar.gz`` and the model card ``README.md``, whose per-lease note states DASR minus
SRResNet per level and whether the gap grew since the last lease.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pandas as pd

from dasrlib.io import atomic_write, atomic_write_text
from dasrlib.lease import EVAL_LEVELS
from dasrlib.results import markdown_table, write_results

__all__ = ["gap_summary", "publish_lease"]

logger = logging.getLogger(__name__)

_GAP_METRICS = ("psnr_y_db", "ssim_y")


def _copy(source: Path, target: Path) -> None:
    with atomic_write(target) as tmp:
        shutil.copyfile(source, tmp)


def gap_summary(eval_rows: pd.DataFrame, previous: pd.DataFrame | None) -> pd.DataFrame:
    """DASR minus SRResNet per (dataset, level, metric), with the last lease's gap and the change.

    `grew` is "first" without an earlier gap, else "yes" when the gap rose (for LPIPS: fell).
    """
    rows = []
    frame = eval_rows[eval_rows["metric"].isin([*_GAP_METRICS, "lpips_alex"])]
    for (dataset, level, metric), cell in frame.groupby(["dataset", "level", "metric"], sort=False):
        values = dict(zip(cell["method"], cell["value"], strict=True))
        if "dasr" not in values or "srresnet" not in values:
            continue
        gap = float(values["dasr"]) - float(values["srresnet"])
        if not math.isfinite(gap):
            continue
        before = math.nan
        if previous is not None and len(previous):
            old = previous[
                (previous["dataset"] == dataset)
                & (previous["level"] == level)
                & (previous["metric"] == metric)
            ]
            old_values = dict(zip(old["method"], old["value"], strict=True))
            if "dasr" in old_values and "srresnet" in old_values:
                before = float(old_values["dasr"]) - float(old_values["srresnet"])
        if not math.isfinite(before):
            grew = "first"
        else:
            better = gap < before if metric == "lpips_alex" else gap > before
            grew = "yes" if better else "no"
        rows.append(
            {
                "dataset": dataset,
                "level": level,
                "metric": metric,
                "dasr_minus_srresnet": gap,
                "previous_lease": before,
                "grew": grew,
            }
        )
    return pd.DataFrame(
        rows,
        columns=["dataset", "level", "metric", "dasr_minus_srresnet", "previous_lease", "grew"],
    )


def _extract_curves(archive: Path, lease: dict[str, Any], curves: Path) -> None:
    """Append this lease's metrics.csv / val.csv rows of the published models to curves/*.csv."""
    chosen = lease.get("chosen")
    roles = {"pretrain": "srresnet", "baseline": "srresnet"}
    if chosen:
        roles[chosen] = "dasr"
    with tarfile.open(archive, "r:gz") as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}
        for run_name, model in roles.items():
            for kind in ("metrics", "val"):
                member = members.get(f"runs/{run_name}/{kind}.csv")
                if member is None:
                    continue
                handle = tar.extractfile(member)
                assert handle is not None
                rows = pd.read_csv(handle)
                rows.insert(0, "lease", lease["lease"])
                rows.insert(1, "run", run_name)
                path = curves / f"{kind}_{model}.csv"
                if path.is_file():
                    old = pd.read_csv(path)
                    rows = pd.concat([old[old["lease"] != lease["lease"]], rows], ignore_index=True)
                with atomic_write(path) as tmp:
                    rows.to_csv(tmp, index=False)


def _curves_png(curves: Path, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 3.8), dpi=100)
    for index, model in enumerate(("srresnet", "dasr")):
        metrics = curves / f"metrics_{model}.csv"
        if metrics.is_file():
            rows = pd.read_csv(metrics)
            for run, part in rows.groupby("run", sort=False):
                style = "--" if run == "pretrain" else "-"
                ax_loss.plot(
                    part["iteration"],
                    part["loss_pixel"],
                    style,
                    color=f"C{index}",
                    lw=1,
                    label=f"{model} ({run}) pixel",
                )
                if "loss_regression" in part:
                    ax_loss.plot(
                        part["iteration"],
                        part["loss_regression"],
                        ":",
                        color=f"C{index}",
                        lw=1,
                        label=f"{model} regression",
                    )
        val = curves / f"val_{model}.csv"
        if val.is_file():
            rows = pd.read_csv(val)
            rows = rows[rows["run"] != "pretrain"] if model == "srresnet" else rows
            mean = rows.groupby("iteration", as_index=False)["psnr_y_db"].mean()
            ax_val.plot(mean["iteration"], mean["psnr_y_db"], "o-", color=f"C{index}", label=model)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("iteration (of the stage)")
    ax_loss.set_ylabel("L1 loss (mean over the log interval)")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend(fontsize=7)
    ax_val.set_xlabel("iteration after the pretrain")
    ax_val.set_ylabel("held-out PSNR-Y (dB), mean of 4 levels")
    ax_val.grid(alpha=0.3)
    ax_val.legend(fontsize=8)
    fig.tight_layout()
    try:
        with atomic_write(out_png) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _side_by_side_note(lease: dict[str, Any], solo_sr: float | None) -> str | None:
    """Whether the side-by-side group did more work per second than its runs one after the other:
    the sum over processes of rate / solo rate (above 1: side by side is faster)."""
    ratio = lease.get("settings", {}).get("dasr_to_srresnet", 0.73)
    for group in lease.get("timing", {}).get("groups", []):
        if group.get("n_base") != 1 or not group.get("it_per_s") or not solo_sr:
            continue
        solo_dasr = solo_sr * ratio
        work = group["n_dasr"] * group["it_per_s"] / solo_dasr
        work += (group.get("baseline_it_per_s") or 0.0) / solo_sr
        verdict = "faster" if work > 1 else "slower"
        return (
            f"side by side ({group['n_dasr']} DASR + 1 SRResNet): {group['it_per_s']:.1f} it/s per "
            f"DASR, {group.get('baseline_it_per_s') or 0:.1f} it/s SRResNet; work rate "
            f"{work:.2f} x one-after-the-other (solo SRResNet {solo_sr:.1f} it/s, solo DASR taken "
            f"as {ratio} of it): {verdict}"
        )
    return None


def _lease_note(lease: dict[str, Any], gaps: pd.DataFrame, solo_sr: float | None) -> str:
    state = lease.get("state_after", {})
    lines = [f"### Lease {lease['lease']} ({lease.get('time_utc', '?')})", ""]
    gpu = lease.get("environment", {}).get("gpu", lease.get("settings", {}).get("device"))
    lines.append(
        f"Commit {lease.get('commit') or '?'}, {gpu}, {lease.get('wall_s')} s in all "
        f"({lease.get('train_wall_s')} s to the end of training)."
    )
    for run in lease.get("runs", []):
        lines.append(
            f"- {run['name']}: iterations {run['start_iteration']} -> {run['end_iteration']} "
            f"({_fmt(run['steady_it_per_s'], 1)} it/s steady, {run['wall_s']} s)"
        )
    if "dasr" in state or "srresnet" in state:
        sr = state.get("srresnet", {})
        lines.append(
            f"- after the lease: DASR {state.get('dasr', {}).get('iterations', 0)} iterations, "
            f"SRResNet baseline {sr.get('iterations', 0)} "
            f"(pretrain {sr.get('pretrain_iterations')})"
        )
    for text in lease.get("notes", []):
        lines.append(f"- {text.splitlines()[0]}")
    side = _side_by_side_note(lease, solo_sr)
    if side:
        lines.append(f"- {side}")
    psnr = gaps[gaps["metric"] == "psnr_y_db"]
    if len(psnr):
        lines += ["", "DASR minus SRResNet, PSNR-Y (dB):", ""]
        table = psnr.pivot(index="dataset", columns="level", values="dasr_minus_srresnet")
        grew = psnr.pivot(index="dataset", columns="level", values="grew")
        levels = [lv for lv in EVAL_LEVELS if lv in table.columns]
        shown = pd.DataFrame(
            {
                lv: [f"{table.loc[d, lv]:+.3f} (grew: {grew.loc[d, lv]})" for d in table.index]
                for lv in levels
            },
            index=table.index,
        ).reset_index()
        lines.append(markdown_table(shown))
    return "\n".join(lines) + "\n"


def _model_card(history: dict[str, Any], eval_rows: pd.DataFrame | None) -> str:
    leases = history["leases"]
    last = leases[-1]
    state = history["state"]
    train = last.get("settings", {}).get("train", {})
    carry = last.get("carry", {})
    sr, dasr = state.get("srresnet", {}), state.get("dasr", {})
    wall = sum(float(lease.get("wall_s") or 0) for lease in leases)
    lines = [
        "# Trained models: DASR (N = 5) and its SRResNet baseline",
        "",
        "Grown a GPU lease at a time with `python -m dasrlib.lease` (docs/shared_training.md).",
        "",
        "| | |",
        "|---|---|",
        f"| data | {carry.get('n_train_images')} shared training images (lossless subset, sha256 "
        f"{str(carry.get('train_subset_sha256'))[:12]}), 4 held out for validation; Set5, Set14, "
        "B100 for evaluation only |",
        f"| SRResNet | pretrain {sr.get('pretrain_iterations')} iterations (pixel loss), then "
        f"{sr.get('iterations', 0)} as the Table 2 baseline |",
        f"| DASR | {dasr.get('iterations', 0)} iterations from the pretrain, variant "
        f"{dasr.get('variant', '-')} {dasr.get('recipe', {})} |",
        f"| batch | {train.get('batch_size')} x {train.get('patch_size')}^2 HR patches, levels "
        "weak/standard/severe 0.3/0.3/0.4 |",
        "| losses | L1 pixel (USM-sharpened target); DASR + 1.0 L1 regression on v |",
        "| optimiser | Adam 1e-4, betas (0.9, 0.99), EMA 0.999; a warm restart every lease (fresh "
        "Adam state, continuous iteration count and schedule) |",
        f"| leases | {len(leases)}, {wall:.0f} s of device wall time in all |",
        f"| hardware | {last.get('environment', {}).get('gpu', '?')}, torch "
        f"{last.get('environment', {}).get('torch', '?')} |",
        f"| commit | {last.get('commit') or '?'} |",
        "",
        "Known limits: a few thousand iterations, not the paper's 500 K; a subset of small public "
        "images instead of DIV2K + Flickr2K + OST; the optimiser restarts every lease; the "
        "perceptual and GAN stages are not trained yet; LPIPS is n/a where the device lacks its "
        "weights; test sets are built on the device's CPU with the project's seed (torch "
        "versions there and here may round differently).",
        "",
    ]
    if eval_rows is not None and len(eval_rows):
        shown = eval_rows[eval_rows["metric"].isin(["psnr_y_db", "ssim_y", "v_mae"])]
        table = shown.pivot_table(
            index=["dataset", "method"], columns=["metric", "level"], values="value"
        )
        lines += ["## Evaluation of the last lease (eval.csv)", ""]
        table.columns = [f"{m} {lv}" for m, lv in table.columns]
        lines.append(markdown_table(table.round(4).reset_index()))
        lines.append("")
    lines += ["## Leases", ""]
    lines += [lease.get("note", "") for lease in reversed(leases)]
    return "\n".join(lines)


def publish_lease(returned: Path, results: Path) -> dict[str, Any]:
    """Update `results` (``results/models``) from the files a lease returned; returns the record."""
    lease_path = returned / "lease.json"
    if not lease_path.is_file():
        raise FileNotFoundError(f"{lease_path} is missing: not the output of a lease")
    lease = json.loads(lease_path.read_text(encoding="utf-8"))
    if lease.get("format") != "dasrlib-lease/1":
        raise ValueError(f"{lease_path}: unknown format {lease.get('format')!r}")
    history_path = results / "history.json"
    history = (
        json.loads(history_path.read_text(encoding="utf-8"))
        if history_path.is_file()
        else {"leases": [], "state": {}}
    )
    expected = len(history["leases"]) + 1
    if lease["lease"] != expected:
        raise ValueError(
            f"{lease_path} is lease {lease['lease']} but {history_path} expects lease {expected}: "
            "was it published already, or carried from an older history?"
        )
    if lease.get("state_before", {}) != history.get("state", {}):
        raise ValueError(f"{lease_path} continued from a state other than {history_path}'s")

    for name in ("srresnet", "dasr"):
        weights = returned / f"{name}.safetensors"
        if weights.is_file():
            _copy(weights, results / name / "model.safetensors")
        elif name in lease["state_after"]:
            raise FileNotFoundError(f"lease state has {name} but {weights} did not come back")

    eval_rows = None
    eval_path = returned / "eval.csv"
    previous = None
    eval_history_path = results / "eval_history.csv"
    if eval_history_path.is_file():
        old = pd.read_csv(eval_history_path)
        if len(old):
            previous = old[old["lease"] == old["lease"].max()]
    if eval_path.is_file():
        eval_rows = pd.read_csv(eval_path)
        rows = eval_rows.copy()
        rows["paper_value"] = math.nan
        write_results(
            rows,
            results / "eval.csv",
            metadata={
                "lease": lease["lease"],
                "commit": lease.get("commit"),
                "device": lease.get("environment"),
                "state": lease["state_after"],
                "levels": list(EVAL_LEVELS),
                "testsets": "seed 0, built on the device's CPU by dasrlib.testsets",
            },
        )
        tagged = eval_rows.copy()
        tagged.insert(0, "lease", lease["lease"])
        tagged["dasr_iterations"] = lease["state_after"].get("dasr", {}).get("iterations")
        tagged["srresnet_iterations"] = lease["state_after"].get("srresnet", {}).get("iterations")
        if eval_history_path.is_file():
            tagged = pd.concat([pd.read_csv(eval_history_path), tagged], ignore_index=True)
        with atomic_write(eval_history_path) as tmp:
            tagged.to_csv(tmp, index=False)
    gaps = (
        gap_summary(eval_rows, previous)
        if eval_rows is not None
        else gap_summary(
            pd.DataFrame(columns=["method", "dataset", "level", "metric", "value"]), None
        )
    )
    with atomic_write(results / "gap_summary.csv") as tmp:
        gaps.to_csv(tmp, index=False)

    archive = returned / "logs.tar.gz"
    if archive.is_file():
        _copy(archive, results / "logs" / f"lease_{lease['lease']:03d}.tar.gz")
        curves = results / "curves"
        curves.mkdir(parents=True, exist_ok=True)
        _extract_curves(archive, lease, curves)
        _curves_png(curves, results / "curves.png")

    solo_sr = None
    for record in [lease, *reversed(history["leases"])]:
        solo_sr = solo_sr or record.get("timing", {}).get("srresnet_solo_it_per_s")
    lease["note"] = _lease_note(lease, gaps, solo_sr)
    lease["gap_summary"] = gaps.to_dict("records")
    history["leases"].append(lease)
    history["state"] = lease["state_after"]
    atomic_write_text(history_path, json.dumps(history, indent=1, default=str) + "\n")
    atomic_write_text(results / "README.md", _model_card(history, eval_rows))
    logger.info("published lease %d into %s", lease["lease"], results)
    return lease
