"""The training loop: stages (pretrain, dasr, baseline, both), step, log, validate, save.

Stages (`TrainConfig.stage`, Sec. 4.1):

- ``pretrain``: one `backbone` network (SRResNet by default) trained with the pixel loss on the
  DASR degradation space; the experts' initialisation.
- ``dasr``: DASR with N experts, all copied from ``init_from`` (a pretrained backbone), trained
  with L = pixel + 1.0 regression + 1.0 perceptual + 0.1 adversarial (Eq. 3; every weight is a
  field). A zero weight builds nothing for its term (no VGG, no discriminator).
- ``baseline``: one `backbone` network (srresnet, edsr, rrdb, swinir) trained with the same
  objective minus the regression term, optionally continued from ``init_from``: the
  equal-budget comparison of Table 2.
- ``both``: ``pretrain`` for `pretrain_iterations` into ``<name>_pretrain``, then ``dasr``
  initialised from it into ``<name>``; one wall-clock budget for the two, and ``dasr`` starts only
  from a finished pretraining (`require_finished` says what a cut-short call left undone).

A stage resumes from its run folder's checkpoint (`dasrlib.train.state.resume_from`), then each
iteration is one `Trainer.advance`, one `TrainingLog.add`, and at its cadence a metrics row, a
validation of the EMA model and a checkpoint. The end of a stage (its iterations or the time
limit) validates, checkpoints and exports ``model.safetensors``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist

from dasrlib.io import remove_stale_temporaries
from dasrlib.results import project_path
from dasrlib.train.build import DistContext, setup_distributed
from dasrlib.train.config import TrainConfig
from dasrlib.train.logger import TrainingLog
from dasrlib.train.state import latest_iteration, resume_from, run_folder_lock
from dasrlib.train.trainer import Trainer

__all__ = [
    "StopCondition",
    "TrainingIncompleteError",
    "require_finished",
    "stage_configs",
    "train",
]

logger = logging.getLogger(__name__)

StopCondition = Callable[[int], bool]
"""Asked with the iteration before each step; True stops the run as its time limit does."""


class TrainingIncompleteError(RuntimeError):
    """A stage of the config has not reached its planned iterations (a time limit or a stop
    condition ended the call); the message says what is missing and how to continue."""


def _stop_now(
    iteration: int, deadline: float | None, stop: StopCondition | None, trainer: Trainer
) -> bool:
    """True when the wall-clock budget is used or `stop` says so (agreed by every process)."""
    if deadline is None and stop is None:
        return False
    now = (deadline is not None and time.monotonic() >= deadline) or (
        stop is not None and stop(iteration)
    )
    if trainer.dist.world_size > 1:
        flag = torch.tensor([1.0 if now else 0.0], device=trainer.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        now = bool(flag.item() > 0)
    return now


def _run_stage(
    config: TrainConfig,
    *,
    deadline: float | None,
    stop: StopCondition | None,
    dist_ctx: DistContext,
    device: torch.device,
) -> tuple[Path, bool]:
    """One stage in its (locked) run folder: (run folder, whether it reached its iterations)."""
    trainer = Trainer(config, device=device, dist_ctx=dist_ctx)
    schedule = config.schedule
    log = TrainingLog(
        trainer.run_dir,
        is_main=dist_ctx.is_main,
        total=schedule.iterations,
        description=f"{config.run.name} ({config.stage})",
        progress=config.run.progress,
        tensorboard=config.run.tensorboard,
    )
    if dist_ctx.is_main:  # temporaries a killed run left (0-byte metrics.csv, model, ...)
        remove_stale_temporaries(trainer.run_dir)
    checkpoint = resume_from(config, trainer.run_dir, is_main=dist_ctx.is_main)
    if checkpoint is not None:
        trainer.load_checkpoint_state(*checkpoint)
        log.resume(trainer.iteration)
    else:  # a fresh run, or a warm restart from init_from at start_iteration
        trainer.iteration = schedule.start_iteration
    trainer.prepare_data()
    start_iteration = trainer.iteration
    trainer.write_run_json("running")
    started = time.monotonic()
    status = "finished"
    check_every = 10 if dist_ctx.world_size > 1 else 1
    with log.open(trainer.iteration):
        while trainer.iteration < schedule.iterations:
            if trainer.iteration % check_every == 0 and _stop_now(
                trainer.iteration, deadline, stop, trainer
            ):
                status = "time_limit"
                logger.info("time limit reached at iteration %d", trainer.iteration)
                break
            log.add(trainer.advance())
            i = trainer.iteration
            last = i == schedule.iterations
            if i % schedule.log_every == 0 or last:
                _log_metrics(trainer, log)
                log.write()
            if dist_ctx.is_main and (i % schedule.val_every == 0 or last):
                log.validation(i, trainer.validate())
                log.write()
            if i % schedule.checkpoint_every == 0 or last:
                trainer.save_checkpoint()
    assert trainer.data is not None
    trainer.data.close()
    if log.pending:  # the iterations since the last log row (a time limit stopped the run)
        _log_metrics(trainer, log)
    if status == "time_limit" or not log.validated(trainer.iteration):
        log.validation(trainer.iteration, trainer.validate())
    log.write()
    if latest_iteration(trainer.ckpt_dir) != trainer.iteration:
        trainer.save_checkpoint()
    trainer.export()
    elapsed = time.monotonic() - started
    done = trainer.iteration - start_iteration
    trainer.write_run_json(
        status,
        {
            "iterations_this_call": done,
            "wall_time_s": elapsed,
            "it_per_s_this_call": done / elapsed if elapsed > 0 else None,
            "validation": log.validated(trainer.iteration),
        },
    )
    logger.info(
        "%s: %s at iteration %d (%d this call, %.1f s)",
        config.run.name,
        status,
        trainer.iteration,
        done,
        elapsed,
    )
    return trainer.run_dir, trainer.iteration >= schedule.iterations


def _log_metrics(trainer: Trainer, log: TrainingLog) -> None:
    log.metrics(
        trainer.iteration,
        lr=trainer.opt_g.param_groups[0]["lr"],
        nonfinite_total=trainer.nonfinite_total,
    )


def stage_configs(config: TrainConfig) -> list[TrainConfig]:
    """The stages `config` runs: itself, or (pretrain, dasr) for stage='both'."""
    if config.stage != "both":
        return [config]
    name = config.run.name
    pretrain = config.replace(
        stage="pretrain", name=f"{name}_pretrain", iterations=config.pretrain_iterations
    )
    dasr = config.replace(stage="dasr", init_from=pretrain.run.path)
    return [pretrain, dasr]


def require_finished(config: TrainConfig) -> None:
    """Raise `TrainingIncompleteError` unless every stage of ``config`` (`stage_configs`) reached
    its planned iterations: one line naming what is not done and how to continue."""
    missing = []
    for stage in stage_configs(config):
        # every stage ends with a checkpoint at the iteration it reached
        reached = latest_iteration(project_path(stage.run.path) / "checkpoints")
        planned = stage.schedule.iterations
        if reached is None:
            missing.append(f"stage {stage.stage} not started ({planned} iterations)")
        elif reached < planned:
            missing.append(f"stage {stage.stage} stopped at iteration {reached} of {planned}")
    if not missing:
        return
    limit = config.schedule.time_limit_minutes
    cause = "" if limit is None else f" within the time limit of {limit:g} min"
    raise TrainingIncompleteError(
        f"{config.run.name}: training did not finish{cause}: {'; '.join(missing)}. Run the same "
        "command again to continue from the last checkpoint (resume: auto), or raise "
        "time_limit_minutes"
    )


def train(config: TrainConfig, *, stop: StopCondition | None = None) -> Path:
    """Run the stage(s) of `config`; returns the (last) run folder ``<out_dir>/<name>``.

    Resumes automatically (resume='auto'), stops cleanly at `time_limit_minutes` (or when
    `stop(iteration)` says so), writes ``metrics.csv``, ``val.csv``, ``run.json``,
    ``checkpoints/`` and ``model.safetensors``. Under torchrun every process calls this; rank 0
    writes.
    """
    deadline = None
    if config.schedule.time_limit_minutes is not None:
        deadline = time.monotonic() + 60.0 * config.schedule.time_limit_minutes
    dist_ctx, device = setup_distributed(config.run.device)
    try:
        run_dir = Path()
        for stage_config in stage_configs(config):
            folder = project_path(stage_config.run.path)
            lock = run_folder_lock(folder) if dist_ctx.is_main else contextlib.nullcontext()
            with lock:  # one training process per run folder (the other ranks write nothing)
                run_dir, finished = _run_stage(
                    stage_config, deadline=deadline, stop=stop, dist_ctx=dist_ctx, device=device
                )
            if dist_ctx.world_size > 1:
                dist.barrier()
            if not finished:  # the next stage starts from this one's finished model only
                break
        return run_dir
    finally:
        if dist_ctx.owns_group:
            dist.destroy_process_group()
