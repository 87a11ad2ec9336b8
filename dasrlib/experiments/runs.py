"""Training runs of the experiments: pretrain -> DASR -> baseline, one naming and one reuse rule.

Table 2 and the Fig. 4 ablations train several networks with one shared budget (flat
`TrainConfig` fields). Each network is a `NetworkRun`: the fields it sets (stage, backbone, DASR
options) and, for DASR, the plain backbone pretrained with the pixel loss that its experts start
from (Sec. 4.1). `plan_runs` turns a budget and the networks into their stage configs, with

- one naming rule (`RunNaming`): ``<prefix>_<role>``, plus ``_<first 8 hex digits of
  dasrlib.train.config.resume_hash>`` when ``hashed`` (Table 2), so a run with other data, model
  or loss settings never resumes or overwrites another, while more iterations continue the same run;
- one pretraining per distinct pretrain config, shared by every network that starts from it.

A `Plan` (network -> its stage configs, possibly empty) is what every experiment's ``plan``
returns (`dasrlib.experiments.table1`, `table2`, `ablations`), and `run_plan` is the one runner
of every notebook: each distinct run once, with one reuse rule (`train_or_load`): a run whose
``run.json`` says it finished with the same config hash and that has its ``model.safetensors``
is loaded, not trained again (logged); anything else is trained (resuming from its checkpoint
when ``resume="auto"``); ``resume="never"`` always trains again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dasrlib.config import config_hash
from dasrlib.results import project_path
from dasrlib.train.config import TrainConfig, config_from_parameters, resume_hash
from dasrlib.train.loop import train
from dasrlib.train.state import RUN_RECORD, RunRecord

__all__ = [
    "NetworkRun",
    "Plan",
    "Pretraining",
    "RunNaming",
    "TrainedRun",
    "as_train_config",
    "network_config",
    "plan_runs",
    "pretrain_config",
    "run_plan",
    "train_or_load",
    "why_not_reusable",
]

logger = logging.getLogger(__name__)

Plan = dict[str, list[TrainConfig]]
"""What an experiment trains: per network (in order) its stage configs, the run it ends in last;
empty when the experiment trains nothing (Table 1). `run_plan` runs it."""

EXPORTED_MODEL = "model.safetensors"


# ---------------------------------------------------------------------------------------------
# The run record and the reuse rule
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainedRun:
    """A trained network: its run folder, and whether it was trained now or loaded."""

    name: str
    run_dir: Path
    reused: bool
    message: str

    @property
    def weights(self) -> Path:
        """The exported EMA generator (`dasrlib.models.checkpoints.load_model` reads it)."""
        return self.run_dir / EXPORTED_MODEL


def why_not_reusable(config: TrainConfig) -> str | None:
    """None when the run of `config` finished with the same config hash and has its exported
    model (the reuse rule); else why not."""
    run_dir = project_path(config.run.path)
    wanted = config_hash(config)
    if config.run.resume == "never":
        return "resume='never'"
    if not (run_dir / RUN_RECORD).is_file():
        return "no run yet"
    record = RunRecord.read(run_dir)
    if record.config_hash != wanted:
        return f"run.json has config hash {record.config_hash}, wanted {wanted}"
    if record.status != "finished":
        return f"the run's status is {record.status!r}"
    if not (run_dir / EXPORTED_MODEL).is_file():
        return f"{EXPORTED_MODEL} is missing"
    return None


def train_or_load(config: TrainConfig, *, deadline: float | None = None) -> TrainedRun:
    """Train `config`, or load its run when `run.json` says it finished with the same config hash.

    Anything else (no run, another hash, an unfinished run, ``resume="never"``) calls `train`,
    which resumes from the run's checkpoint when there is one and ``resume="auto"``, and stops
    at `deadline` (`time.monotonic()`) with a checkpoint to resume from. `message` says which
    happened and why.
    """
    name = config.run.name
    run_dir = project_path(config.run.path)
    reason = why_not_reusable(config)
    if reason is None:
        message = (
            f"{name}: loaded, not trained again (finished run with config hash "
            f"{config_hash(config)})"
        )
        logger.info(message)
        return TrainedRun(name, run_dir, True, message)
    started = time.monotonic()
    stop = None if deadline is None else (lambda _: time.monotonic() >= deadline)
    trained_dir = project_path(train(config, stop=stop))
    record = RunRecord.read(trained_dir)
    message = (
        f"{name}: trained ({reason}): {record.iterations_this_call} iterations "
        f"this call, {record.iteration} in all, {time.monotonic() - started:.1f} s"
    )
    planned = config.schedule.iterations
    if record.iteration < planned:  # a time limit: tabulated at the iteration it reached
        message += f"; stopped short at {record.iteration} of {planned} iterations (time limit)"
        logger.warning(message)
    else:
        logger.info(message)
    return TrainedRun(name, trained_dir, False, message)


# ---------------------------------------------------------------------------------------------
# Planning: pretrain -> DASR -> baseline with one naming rule
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunNaming:
    """Run names ``<prefix>_<role>``; with `hashed`, ``_<resume hash[:8]>`` is appended."""

    prefix: str
    hashed: bool = False

    def name(self, role: str, config: TrainConfig) -> str:
        """The run name of `config` playing `role` (its own name does not matter)."""
        base = f"{self.prefix}_{role}"
        if not self.hashed:
            return base
        return f"{base}_{resume_hash(config)[:8]}"

    def named(self, role: str, config: TrainConfig) -> TrainConfig:
        """`config` with its run name for `role`."""
        return config.replace(name=self.name(role, config))


@dataclass(frozen=True)
class Pretraining:
    """The pixel-loss pretraining (Sec. 4.1) of the plain `backbone` a DASR's experts copy."""

    role: str
    backbone: str


@dataclass(frozen=True)
class NetworkRun:
    """One network of an experiment: its run-name `role`, the `TrainConfig` fields it sets
    (stage, backbone, DASR options) and the `pretraining` its experts start from, if any."""

    role: str
    fields: Mapping[str, Any]
    pretraining: Pretraining | None = None


def as_train_config(budget: Mapping[str, Any] | TrainConfig) -> TrainConfig:
    """The budget as a `TrainConfig` (flat fields are validated here)."""
    if isinstance(budget, TrainConfig):
        return budget
    return config_from_parameters(dict(budget))


def pretrain_config(
    budget: Mapping[str, Any] | TrainConfig,
    pretraining: Pretraining,
    *,
    iterations: int,
    naming: RunNaming,
) -> TrainConfig:
    """The pretraining run: the budget with stage ``pretrain``, its backbone and `iterations`."""
    if iterations <= 0:
        raise ValueError(f"pretrain iterations must be positive, got {iterations}")
    config = as_train_config(budget).replace(
        stage="pretrain", backbone=pretraining.backbone, iterations=iterations, init_from=None
    )
    return naming.named(pretraining.role, config)


def network_config(
    budget: Mapping[str, Any] | TrainConfig,
    network: NetworkRun,
    *,
    init_from: str | None,
    naming: RunNaming,
) -> TrainConfig:
    """The run of `network`: the budget plus the network's fields, started from `init_from`."""
    config = as_train_config(budget).replace(**network.fields, init_from=init_from)
    return naming.named(network.role, config)


def plan_runs(
    budget: Mapping[str, Any] | TrainConfig,
    networks: Mapping[str, NetworkRun],
    *,
    pretrain_iterations: int,
    naming: RunNaming,
) -> Plan:
    """Per network (in order), its stage configs: its pretraining (when it has one and
    `pretrain_iterations` > 0), then its own run initialised from that pretraining's folder.

    Networks with the same pretraining get equal pretrain configs (one run, `run_plan`).
    With `pretrain_iterations` = 0 a DASR starts from random experts (logged: known to diverge
    at the paper's scale).
    """
    plan: Plan = {}
    for key, network in networks.items():
        stages: list[TrainConfig] = []
        init_from = None
        if network.pretraining is not None:
            if pretrain_iterations > 0:
                first = pretrain_config(
                    budget, network.pretraining, iterations=pretrain_iterations, naming=naming
                )
                stages.append(first)
                init_from = first.run.path
            else:
                logger.warning("pretrain_iterations=0: %s starts from random experts", key)
        stages.append(network_config(budget, network, init_from=init_from, naming=naming))
        plan[key] = stages
    return plan


def run_plan(
    plan: Mapping[str, Sequence[TrainConfig]], *, budget_minutes: float | None = None
) -> dict[str, TrainedRun]:
    """Train or load (`train_or_load`) every stage of `plan` in order, each distinct run once;
    returns each network's last run, in the plan's order (an empty plan: nothing). Every run's
    message is logged: a finished run of the same config hash is loaded, not trained again.

    `budget_minutes` is one wall-clock budget for the whole plan (a background budget): the run
    in progress when it ends stops with a checkpoint, no later run starts (finished ones are still
    loaded), and only the networks whose every stage finished are returned; the same call again
    continues where it stopped.
    """
    deadline = None if budget_minutes is None else time.monotonic() + 60.0 * budget_minutes
    done: dict[str, TrainedRun] = {}
    runs: dict[str, TrainedRun] = {}
    for key, stages in plan.items():
        for config in stages:
            path = config.run.path
            if path not in done:
                out_of_time = deadline is not None and time.monotonic() >= deadline
                if out_of_time and why_not_reusable(config) is not None:
                    logger.info("%s: not started, the budget is used", key)
                    break
                done[path] = train_or_load(config, deadline=deadline)
            if deadline is not None and RunRecord.read(done[path].run_dir).status != "finished":
                logger.info(
                    "%s: %s stopped by the budget; the next call continues it", key, config.run.name
                )
                break
        else:
            if stages:
                runs[key] = done[stages[-1].run.path]
    return runs
