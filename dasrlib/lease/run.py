"""The device side of a lease: train inside a wall-time budget, evaluate on the GPU, pack.

Order of work (the issue's): SRResNet pretrain (pixel loss) when no SRResNet exists yet; then DASR
(N = 5, pixel + regression loss, experts copied from the pretrain) and the SRResNet baseline
continued from the same pretrain, side by side on the one GPU, both to the same iteration target;
a short solo catch-up makes their counts equal when the time limit stopped them apart. The first
DASR lease trains the variants of `LeaseSettings.variants` (plain, predictor warm-up first,
expert noise) side by side and keeps the one with the best held-out validation PSNR-Y; later
leases continue that one only.

Warm restart: each run starts in a fresh folder from the published fp16 weights (``init_from``)
at the published iteration (``start_iteration``): fresh Adam state, the same iteration count,
learning-rate milestones and data-stream position as an uninterrupted run would have.

Every training process is ``python -m dasrlib.train`` with ``time_limit_minutes`` set from the
wall-clock plan. The environment and the returned files are checked in `dasrlib.lease.checks`;
the test sets (built on the CPU while the GPU trains) and the evaluation are
`dasrlib.lease.evaluation`'s. ``check_environment``, ``check_return_limits`` and
``EnvironmentProblem`` stay importable from here.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dasrlib.lease import EVAL_LEVELS, EVAL_SETS
from dasrlib.lease.checks import EnvironmentProblem, check_environment, check_return_limits
from dasrlib.lease.evaluation import EvaluationPlan, evaluate_models, start_testsets

__all__ = [
    "EnvironmentProblem",
    "LeaseSettings",
    "check_environment",
    "check_return_limits",
    "run_lease",
]

logger = logging.getLogger(__name__)

_DEFAULT_VARIANTS: dict[str, dict[str, float]] = {
    "plain": {"predictor_warmup_iters": 0, "expert_init_noise": 0.0},
    "warmup": {"predictor_warmup_iters": 500, "expert_init_noise": 0.0},
    "noise": {"predictor_warmup_iters": 0, "expert_init_noise": 0.01},
}
_DEFAULT_TRAIN: dict[str, Any] = {
    "batch_size": 24,
    "patch_size": 256,
    "seed": 0,
    "num_experts": 5,
    "val_images": 4,
    "val_every": 1000,
    "log_every": 100,
    "checkpoint_every": 2000,
    "perceptual_weight": 0.0,  # the PSNR-oriented stage: pixel (+ regression for DASR) only
    "adversarial_weight": 0.0,
    "export_dtype": "fp16",
    "progress": False,
    "compile": True,
}


@dataclass(frozen=True, kw_only=True)
class LeaseSettings:
    """What one lease does and how its wall-clock budget is split (seconds from the start)."""

    budget_s: float = 560.0  # the whole call ends before this (the device limit is 590 s)
    eval_reserve_s: float = 110.0  # kept for evaluation after training
    pack_reserve_s: float = 15.0  # kept for weights, logs archive and limit checks
    pretrain_share: float = 0.4  # of the training window, when no SRResNet exists yet
    side_by_side: bool = True  # DASR and its baseline in parallel processes on the one GPU
    catch_up_min_s: float = 25.0  # a solo catch-up needs at least this much time left
    startup_s: float = 40.0  # guess of process start + data + compile (measured after lease 1)
    srresnet_it_per_s: float = 55.0  # guess of a solo SRResNet step rate (measured in lease 1)
    dasr_to_srresnet: float = 0.73  # guess of DASR's solo step rate relative to SRResNet
    variant_min_gain_db: float = 0.02  # a DASR variant beats plain by this much or is dropped
    max_iterations: int | None = None  # cap per stage and lease (tests); None: time decides
    variants: dict[str, dict[str, float]] = field(
        default_factory=lambda: {k: dict(v) for k, v in _DEFAULT_VARIANTS.items()}
    )
    train: dict[str, Any] = field(default_factory=lambda: dict(_DEFAULT_TRAIN))
    device: str = "cuda"  # training and evaluation device ("cpu" for the dry run)
    eval_sets: tuple[str, ...] = EVAL_SETS
    eval_levels: tuple[str, ...] = EVAL_LEVELS
    eval_max_images: int | None = None  # first N images of each set (dry run); None: all
    testset_seed: int = 0  # the project's test-set seed
    testset_threads: int = 4  # CPU threads of the background test-set builder
    eval_workers: int = 12  # processes sharing the evaluation (1: in this process)

    def __post_init__(self) -> None:
        if not 0 < self.budget_s < 590:
            raise ValueError(f"budget_s must be in (0, 590), got {self.budget_s}")
        if not 0 < self.pretrain_share < 1:
            raise ValueError(f"pretrain_share must be in (0, 1), got {self.pretrain_share}")
        if not self.variants:
            raise ValueError("variants must name at least one DASR recipe")
        for name, recipe in self.variants.items():
            unknown = set(recipe) - {"predictor_warmup_iters", "expert_init_noise"}
            if unknown:
                raise ValueError(f"variant {name!r}: unknown fields {sorted(unknown)}")
        if self.max_iterations is not None and self.max_iterations <= 0:
            raise ValueError(f"max_iterations must be positive, got {self.max_iterations}")

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, Any]) -> LeaseSettings:
        """Defaults with `overrides` applied; ``train.KEY`` sets one training field."""
        names = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        train = dict(_DEFAULT_TRAIN)
        for key, value in overrides.items():
            if key.startswith("train."):
                train[key[len("train.") :]] = value
            elif key in names:
                values[key] = tuple(value) if key in ("eval_sets", "eval_levels") else value
            else:
                raise ValueError(f"unknown lease setting {key!r}; known: {sorted(names)}")
        return cls(**values, train=train)

    def evaluation_plan(self) -> EvaluationPlan:
        """The evaluation's part of these settings; it ends `pack_reserve_s` before the budget."""
        return EvaluationPlan(
            eval_sets=self.eval_sets,
            eval_levels=self.eval_levels,
            eval_max_images=self.eval_max_images,
            testset_seed=self.testset_seed,
            testset_threads=self.testset_threads,
            eval_workers=self.eval_workers,
            device=self.device,
            deadline_s=self.budget_s - self.pack_reserve_s,
        )


# ---------------------------------------------------------------------------------------------
# Training processes
# ---------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """One ``python -m dasrlib.train`` process of this lease."""

    name: str
    role: str  # pretrain | baseline | dasr
    overrides: dict[str, Any]
    start_iteration: int
    log: Path
    process: subprocess.Popen | None = None
    started: float = 0.0
    wall_s: float = 0.0
    calls: list[dict[str, Any]] = field(default_factory=list)


class _Lease:
    def __init__(self, settings: LeaseSettings, carry: Path, out: Path, work: Path) -> None:
        self.settings, self.carry, self.out, self.work = settings, carry, out, work
        self.t0 = time.monotonic()
        self.runs_dir = work / "runs"
        self.logs_dir = work / "logs"
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.notes: list[str] = []
        history_path = carry / "models" / "history.json"
        self.history = (
            json.loads(history_path.read_text(encoding="utf-8"))
            if history_path.is_file()
            else {"leases": [], "state": {}}
        )
        self.state: dict[str, Any] = json.loads(json.dumps(self.history.get("state", {})))
        self.timing: dict[str, Any] = {"groups": []}  # this lease's measurements

    # -- clock ----------------------------------------------------------------------------

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    @property
    def train_end(self) -> float:
        s = self.settings
        return s.budget_s - s.eval_reserve_s - s.pack_reserve_s

    def note(self, text: str) -> None:
        logger.info("%s", text)
        self.notes.append(text)

    # -- processes ------------------------------------------------------------------------

    def _env(self, threads: int | None = None) -> dict[str, str]:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        if threads is not None:
            env["OMP_NUM_THREADS"] = str(threads)
        return env

    def start_training(self, run: _Run, *, iterations: int, until_s: float, **extra: Any) -> None:
        """Start (or continue, in the same folder) `run` towards `iterations` until `until_s`."""
        limit_min = max(until_s - self.elapsed(), 1.0) / 60.0
        values = {
            **self.settings.train,
            **run.overrides,
            "name": run.name,
            "out_dir": str(self.runs_dir),
            "device": self.settings.device,
            "iterations": iterations,
            "start_iteration": run.start_iteration,
            "time_limit_minutes": round(limit_min, 4),
            **extra,
        }
        command = [sys.executable, "-m", "dasrlib.train"]
        for key, value in values.items():
            command += ["--set", f"{key}={json.dumps(value)}"]
        handle = open(run.log, "a", encoding="utf-8")  # noqa: SIM115 - closed by the child's end
        handle.write(f"$ {' '.join(command)}\n")
        handle.flush()
        run.started = time.monotonic()
        run.process = subprocess.Popen(
            command,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=self._env(),
            cwd=str(self.work),
        )
        handle.close()
        run.calls.append({"iterations_target": iterations, "time_limit_min": limit_min, **extra})
        logger.info("started %s -> iteration %d (%.1f min)", run.name, iterations, limit_min)

    def retry_uncompiled(self, runs: Sequence[_Run], *, iterations: int, until_s: float) -> None:
        """Start again, without torch.compile, the runs that failed before exporting anything
        (a compiler problem on the device must not cost the lease)."""
        failed = [
            r
            for r in runs
            if r.calls
            and r.calls[-1].get("exit_code") not in (0, None)
            and self.weights_of(r) is None
            and self.settings.train.get("compile")
        ]
        if not failed or until_s - self.elapsed() < self.settings.catch_up_min_s:
            return
        self.note(f"retrying {[r.name for r in failed]} without torch.compile")
        for run in failed:
            self.start_training(run, iterations=iterations, until_s=until_s, compile=False)
        self.wait(failed, hard_end_s=until_s + 90)

    def wait(self, runs: Sequence[_Run], *, hard_end_s: float) -> None:
        """Wait for `runs`; a process still alive at `hard_end_s` is terminated (logged)."""
        for run in runs:
            assert run.process is not None
            left = max(hard_end_s - self.elapsed(), 1.0)
            try:
                code = run.process.wait(timeout=left)
            except subprocess.TimeoutExpired:
                self.note(f"{run.name}: still running at {hard_end_s:.0f} s; terminated")
                run.process.terminate()
                code = run.process.wait(timeout=30)
            run.wall_s += time.monotonic() - run.started
            run.calls[-1]["exit_code"] = code
            run.calls[-1]["wall_s"] = round(time.monotonic() - run.started, 1)
            if code != 0:
                tail = run.log.read_text(encoding="utf-8", errors="replace")[-3000:]
                self.note(f"{run.name}: exit code {code}; log tail:\n{tail}")

    def iteration_of(self, run: _Run) -> int | None:
        path = self.runs_dir / run.name / "run.json"
        if not path.is_file():
            return None
        return int(json.loads(path.read_text(encoding="utf-8"))["iteration"])

    def weights_of(self, run: _Run) -> Path | None:
        path = self.runs_dir / run.name / "model.safetensors"
        return path if path.is_file() else None

    # -- rates ----------------------------------------------------------------------------

    def steady_rate(self, run: _Run) -> float | None:
        """Median it/s of this lease's metrics rows after the first (which holds the compile)."""
        import pandas as pd

        path = self.runs_dir / run.name / "metrics.csv"
        if not path.is_file():
            return None
        rows = pd.read_csv(path)
        rows = rows[rows["iteration"] > run.start_iteration]
        if len(rows) > 1:
            rows = rows.iloc[1:]
        return float(rows["it_per_s"].median()) if len(rows) else None

    def group_timing(self, n_dasr: int, n_base: int) -> tuple[float, float]:
        """(DASR it/s of each process, start-up s) for n_dasr DASR + n_base SRResNet processes.

        The last lease that ran the same group measured them; otherwise a time-sharing model:
        the processes take turns on the GPU, so each gets 1 / sum(1 / solo rate).
        """
        for lease in reversed(self.history.get("leases", [])):
            for group in lease.get("timing", {}).get("groups", []):
                if group.get("n_dasr") == n_dasr and group.get("n_base") == n_base:
                    if group.get("it_per_s"):
                        return float(group["it_per_s"]), float(group["startup_s"])
        s = self.settings
        solo_sr, startup = s.srresnet_it_per_s, s.startup_s
        for lease in [{"timing": self.timing}, *reversed(self.history.get("leases", []))]:
            timing = lease.get("timing", {})
            if timing.get("srresnet_solo_it_per_s"):
                solo_sr = float(timing["srresnet_solo_it_per_s"])
                startup = max(float(timing.get("startup_s") or 0.0), startup)
                break
        solo_dasr = solo_sr * s.dasr_to_srresnet
        seconds = n_dasr / solo_dasr + n_base / solo_sr
        return 1.0 / seconds, startup

    def target(self, start: int, rate: float, startup: float, until_s: float) -> int:
        steps = int(rate * max(until_s - self.elapsed() - startup, 0.0) * 0.97)
        if self.settings.max_iterations is not None:
            steps = min(steps, self.settings.max_iterations)
        return start + max(steps, 1)

    def measure_startup(self, run: _Run, done: int) -> float | None:
        rate = self.steady_rate(run)
        if not rate or done <= 0:
            return None
        return max(run.calls[-1]["wall_s"] - done / rate, 0.0)


# ---------------------------------------------------------------------------------------------
# The lease
# ---------------------------------------------------------------------------------------------


def _choose_variant(lease: _Lease, runs: Sequence[_Run]) -> tuple[_Run, list[dict[str, Any]]]:
    """The DASR variant with the best mean held-out PSNR-Y at the last iteration all reached."""
    import pandas as pd

    frames = {}
    for run in runs:
        path = lease.runs_dir / run.name / "val.csv"
        if path.is_file():
            frames[run.name] = pd.read_csv(path)
    if not frames:
        return runs[0], []
    common = set.intersection(*(set(f["iteration"]) for f in frames.values()))
    rows = []
    for run in runs:
        frame = frames.get(run.name)
        if frame is None:
            continue
        at = max(common) if common else int(frame["iteration"].max())
        last = frame[frame["iteration"] == at]
        rows.append(
            {
                "variant": run.name.removeprefix("dasr_"),
                "iteration": at,
                "val_psnr_y_db": float(last["psnr_y_db"].mean()),
                "val_gain_db": float((last["psnr_y_db"] - last["bicubic_psnr_y_db"]).mean()),
                **run.overrides,
            }
        )
    best = max(rows, key=lambda r: r["val_psnr_y_db"])
    plain = next((r for r in rows if r["variant"] == "plain"), None)
    min_gain = lease.settings.variant_min_gain_db
    if plain is not None and best["val_psnr_y_db"] - plain["val_psnr_y_db"] < min_gain:
        best = plain  # a change that does not help by min_gain is dropped
    chosen = next(r for r in runs if r.name == f"dasr_{best['variant']}")
    return chosen, rows


def _train(lease: _Lease) -> dict[str, Any]:
    """All training of the lease; returns the record of runs, choices and timings."""
    s = lease.settings
    carried = lease.carry / "models"
    state = lease.state
    sr_state = state.get("srresnet")
    dasr_state = state.get("dasr")
    data_root = str((lease.carry / "train").resolve())
    common = {"data_root": data_root}
    record: dict[str, Any] = {"runs": [], "timing": lease.timing}
    runs: list[_Run] = []

    def new_run(name: str, role: str, overrides: dict[str, Any], start: int) -> _Run:
        run = _Run(name, role, {**common, **overrides}, start, lease.logs_dir / f"{name}.log")
        runs.append(run)
        return run

    # 1. SRResNet pretrain when none exists yet.
    pretrain_weights: Path | None = None
    if sr_state is None:
        pre = new_run("pretrain", "pretrain", {"stage": "pretrain", "backbone": "srresnet"}, 0)
        window_end = lease.elapsed() + (lease.train_end - lease.elapsed()) * s.pretrain_share
        iterations = s.max_iterations or 10_000_000
        lease.start_training(pre, iterations=iterations, until_s=window_end)
        lease.wait([pre], hard_end_s=window_end + 120)
        lease.retry_uncompiled([pre], iterations=iterations, until_s=window_end)
        pretrain_weights = lease.weights_of(pre)
        done = lease.iteration_of(pre) or 0
        if pretrain_weights is None:
            lease.note("pretrain wrote no weights; nothing else can train this lease")
            record["runs"] = _run_records(lease, runs)
            return record
        rate = lease.steady_rate(pre)
        record["timing"]["srresnet_solo_it_per_s"] = rate
        record["timing"]["startup_s"] = lease.measure_startup(pre, done)
        sr_state = {"pretrain_iterations": done, "iterations": 0, "weights": "pretrain"}
        lease.note(f"pretrain: {done} iterations ({rate or 0:.1f} it/s steady)")

    # 2. DASR variants (first DASR lease) or the chosen one, and the SRResNet baseline.
    if lease.train_end - lease.elapsed() < s.catch_up_min_s:
        lease.note("no time left for DASR and the baseline this lease")
        state["srresnet"] = sr_state
        record["runs"] = _run_records(lease, runs)
        record["srresnet_weights"] = str(pretrain_weights) if pretrain_weights else None
        return record
    sr_init = pretrain_weights or (carried / "srresnet.safetensors")
    base_start = int(sr_state["iterations"])
    if dasr_state is None:
        if base_start != 0:
            raise ValueError(
                f"history has an SRResNet baseline at iteration {base_start} but no DASR: "
                "DASR must start from the pure pretrain"
            )
        variants = {name: {**_DEFAULT_VARIANTS["plain"], **r} for name, r in s.variants.items()}
        dasr_init, dasr_start = sr_init, 0
    else:
        variants = {dasr_state["variant"]: dict(dasr_state["recipe"])}
        dasr_init, dasr_start = carried / "dasr.safetensors", int(dasr_state["iterations"])
    for path in (sr_init, dasr_init):
        if not Path(path).is_file():
            raise FileNotFoundError(f"weights to continue from are missing: {path}")
    dasr_runs = [
        new_run(
            f"dasr_{name}",
            "dasr",
            {"stage": "dasr", "init_from": str(Path(dasr_init).resolve()), **recipe},
            dasr_start,
        )
        for name, recipe in variants.items()
    ]
    base = new_run(
        "baseline",
        "baseline",
        {
            "stage": "baseline",
            "backbone": "srresnet",
            "init_from": str(Path(sr_init).resolve()),
        },
        base_start,
    )
    if dasr_start != base_start:
        lease.note(f"counts differ before this lease: DASR {dasr_start}, SRResNet {base_start}")
    start = max(dasr_start, base_start)
    if s.side_by_side:
        rate, startup = lease.group_timing(len(dasr_runs), 1)
        goal = lease.target(start, rate, startup, lease.train_end)
        for run in (*dasr_runs, base):
            lease.start_training(run, iterations=goal, until_s=lease.train_end)
        lease.wait([*dasr_runs, base], hard_end_s=lease.train_end + 90)
        lease.retry_uncompiled([*dasr_runs, base], iterations=goal, until_s=lease.train_end)
        group = {"n_dasr": len(dasr_runs), "n_base": 1, "target": goal, "planned_it_per_s": rate}
    else:
        rate, startup = lease.group_timing(len(dasr_runs), 0)
        base_rate, _ = lease.group_timing(0, 1)
        share = (1 / rate) / (1 / rate + 1 / base_rate)
        dasr_end = lease.elapsed() + (lease.train_end - lease.elapsed()) * share
        goal = lease.target(start, rate, startup, dasr_end)
        for run in dasr_runs:
            lease.start_training(run, iterations=goal, until_s=dasr_end)
        lease.wait(dasr_runs, hard_end_s=dasr_end + 90)
        goal = min(lease.iteration_of(r) or start for r in dasr_runs)
        lease.start_training(base, iterations=goal, until_s=lease.train_end)
        lease.wait([base], hard_end_s=lease.train_end + 90)
        group = {"n_dasr": len(dasr_runs), "n_base": 0, "target": goal, "planned_it_per_s": rate}
    rates = [lease.steady_rate(r) for r in dasr_runs]
    rates = [r for r in rates if r]
    group["it_per_s"] = min(rates) if rates else None
    group["baseline_it_per_s"] = lease.steady_rate(base)
    startups = [
        lease.measure_startup(r, (lease.iteration_of(r) or r.start_iteration) - r.start_iteration)
        for r in dasr_runs
    ]
    startups = [x for x in startups if x is not None]
    group["startup_s"] = max(startups) if startups else startup
    record["timing"]["groups"].append(group)

    # 3. The variant to keep, then equal counts (a solo catch-up of the one behind).
    chosen, comparison = _choose_variant(lease, dasr_runs)
    if len(dasr_runs) > 1:
        record["variant_comparison"] = comparison
        lease.note(
            "variants at equal iteration, mean held-out PSNR-Y: "
            + ", ".join(f"{r['variant']} {r['val_psnr_y_db']:.3f} dB" for r in comparison)
            + f"; kept {chosen.name.removeprefix('dasr_')}"
        )
    d_iter = lease.iteration_of(chosen) or dasr_start
    b_iter = lease.iteration_of(base) or base_start
    if d_iter != b_iter:
        behind = chosen if d_iter < b_iter else base
        goal = max(d_iter, b_iter)
        left = lease.train_end - lease.elapsed()
        if left >= s.catch_up_min_s:
            lease.note(
                f"catch-up: {behind.name} from {min(d_iter, b_iter)} to {goal} ({left:.0f} s)"
            )
            lease.start_training(behind, iterations=goal, until_s=lease.train_end, compile=False)
            lease.wait([behind], hard_end_s=lease.train_end + 60)
            d_iter = lease.iteration_of(chosen) or d_iter
            b_iter = lease.iteration_of(base) or b_iter
        if d_iter != b_iter:
            lease.note(f"unequal counts after this lease: DASR {d_iter}, SRResNet {b_iter}")

    if lease.weights_of(chosen) is not None:
        state["dasr"] = {
            "variant": chosen.name.removeprefix("dasr_"),
            "recipe": {
                k: chosen.overrides[k] for k in ("predictor_warmup_iters", "expert_init_noise")
            },
            "iterations": d_iter,
        }
    if lease.weights_of(base) is not None:
        sr_state = {**sr_state, "iterations": b_iter, "weights": "baseline"}
    state["srresnet"] = sr_state
    record["chosen"] = chosen.name
    record["runs"] = _run_records(lease, runs)
    record["dasr_weights"] = str(lease.weights_of(chosen) or "")
    srresnet = lease.weights_of(base) or pretrain_weights or ""
    record["srresnet_weights"] = str(srresnet)
    return record


def _run_records(lease: _Lease, runs: Sequence[_Run]) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        end = lease.iteration_of(run)
        rows.append(
            {
                "name": run.name,
                "role": run.role,
                "start_iteration": run.start_iteration,
                "end_iteration": end,
                "iterations": None if end is None else end - run.start_iteration,
                "steady_it_per_s": lease.steady_rate(run),
                "wall_s": round(run.wall_s, 1),
                "calls": run.calls,
                "overrides": {k: v for k, v in run.overrides.items() if k != "data_root"},
            }
        )
    return rows


def _pack_logs(lease: _Lease, archive: Path) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(lease.logs_dir.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=f"logs/{path.relative_to(lease.logs_dir).as_posix()}")
        for run_dir in sorted(p for p in lease.runs_dir.iterdir() if p.is_dir()):
            for name in ("metrics.csv", "val.csv", "run.json"):
                path = run_dir / name
                if path.is_file():
                    tar.add(path, arcname=f"runs/{run_dir.name}/{name}")


def run_lease(
    *, carry: Path, out: Path, work: Path, settings: LeaseSettings, commit: str | None = None
) -> dict[str, Any]:
    """One lease: train, evaluate, write the returned files into `out`; returns lease.json."""
    t0 = time.monotonic()
    env = check_environment(device=settings.device)
    carry, out = carry.resolve(), out.resolve()
    # A fresh folder per call: a second call on a warm machine must not resume the first one's
    # run folders (each lease starts from the published weights).
    work = work.resolve() / f"{time.strftime('%Y%m%dT%H%M%S')}_{os.getpid()}"
    manifest_path = carry / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"{manifest_path} is missing: run 'python -m dasrlib.lease prepare'"
        )
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    out.mkdir(parents=True, exist_ok=True)
    lease = _Lease(settings, carry, out, work)
    lease.t0 = t0
    file_handler = logging.FileHandler(lease.logs_dir / "lease.log", encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(file_handler)
    logger.info("environment: %s", env)
    plan = settings.evaluation_plan()
    testsets = start_testsets(
        plan,
        carry=carry,
        work=lease.work,
        logs_dir=lease.logs_dir,
        env=lease._env(threads=settings.testset_threads),
    )
    error = None
    try:
        record = _train(lease)
    except Exception as err:  # keep whatever was trained, evaluate it, and say what broke
        logger.exception("training failed")
        error = f"{type(err).__name__}: {err}"
        record = {"runs": [], "timing": {"groups": []}}
    trained_s = lease.elapsed()
    models = {
        "srresnet": Path(record["srresnet_weights"]) if record.get("srresnet_weights") else None,
        "dasr": Path(record["dasr_weights"]) if record.get("dasr_weights") else None,
    }
    eval_rows, skipped = evaluate_models(
        plan, testsets, models, logs_dir=lease.logs_dir, elapsed=lease.elapsed
    )
    for text in skipped:
        lease.note(f"evaluation: {text}")
    if len(eval_rows):
        eval_rows.to_csv(out / "eval.csv", index=False)
    for name, path in models.items():
        if path is not None:
            shutil.copyfile(path, out / f"{name}.safetensors")
    record.update(
        {
            "format": "dasrlib-lease/1",
            "lease": len(lease.history.get("leases", [])) + 1,
            "commit": commit,
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "environment": env,
            "settings": dataclasses.asdict(settings),
            "carry": {
                k: manifest.get(k) for k in ("train_subset_sha256", "n_train_images", "bytes")
            },
            "state_before": lease.history.get("state", {}),
            "state_after": lease.state,
            "train_wall_s": round(trained_s, 1),
            "notes": lease.notes,
            "error": error,
        }
    )
    record["wall_s"] = round(lease.elapsed(), 1)
    (out / "lease.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    logging.getLogger().removeHandler(file_handler)
    file_handler.close()
    _pack_logs(lease, out / "logs.tar.gz")
    record["returned"] = check_return_limits(out)
    record["wall_s"] = round(lease.elapsed(), 1)
    (out / "lease.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    check_return_limits(out)
    if error is not None:
        raise RuntimeError(f"lease finished with a training error (files are in {out}): {error}")
    return record


def default_work_dir() -> Path:
    """A scratch folder for run folders and logs (local disk)."""
    return Path(os.environ.get("LEASE_WORK", "/tmp/dasr_lease"))


def _json_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def parse_sets(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings (values read as YAML) as a dict; ValueError names a bad item."""
    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        values[key.strip()] = _json_value(value)
    return values


def finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
