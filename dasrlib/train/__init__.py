"""Training (Sec. 4.1, Eq. 3): SRResNet pretraining, DASR, and equal-budget baselines.

One module per concern, imports running down this list:

- `config`: `TrainConfig`, its typed sections, validation, `resume_hash`, flat names.
- `stream`: the deterministic data stream (exact resume) and seed derivation.
- `state`: checkpoint pair files, the resume decision, a run's ``run.json`` read back.
- `validation`: held-out validation set; `validation_summary`, `validation_example`.
- `build`: generator, discriminator, VGG loss, EMA, torchrun / DDP.
- `logger`: progress bar, ``metrics.csv``, ``val.csv``, tensorboard.
- `trainer`: one stage's state and its optimiser step.
- `loop`: `train` (stages, step, log, validate, save).
- `cli` (``python -m dasrlib.train``).
"""

from dasrlib.train.build import EMA, DistContext, build_generator
from dasrlib.train.cli import main
from dasrlib.train.config import (
    RESUME_FREE_FIELDS,
    STAGES,
    DataSection,
    LossSection,
    ModelSection,
    OptimiserSection,
    RunSection,
    ScheduleSection,
    TrainConfig,
    config_from_parameters,
    notebook_parameters,
    resume_hash,
)
from dasrlib.train.loop import (
    StopCondition,
    TrainingIncompleteError,
    require_finished,
    stage_configs,
    train,
)
from dasrlib.train.state import (
    CheckpointNotFound,
    load_checkpoint,
    read_run_config,
    resume_from,
    write_checkpoint,
)
from dasrlib.train.stream import DataStream, derive_seed
from dasrlib.train.trainer import NonFiniteLossError, Trainer
from dasrlib.train.validation import ValidationSet, validation_example, validation_summary

__all__ = [
    "EMA",
    "RESUME_FREE_FIELDS",
    "STAGES",
    "CheckpointNotFound",
    "DataSection",
    "DataStream",
    "DistContext",
    "LossSection",
    "ModelSection",
    "NonFiniteLossError",
    "OptimiserSection",
    "RunSection",
    "ScheduleSection",
    "StopCondition",
    "TrainConfig",
    "Trainer",
    "TrainingIncompleteError",
    "ValidationSet",
    "build_generator",
    "config_from_parameters",
    "notebook_parameters",
    "derive_seed",
    "load_checkpoint",
    "main",
    "read_run_config",
    "resume_from",
    "resume_hash",
    "require_finished",
    "stage_configs",
    "train",
    "validation_example",
    "validation_summary",
    "write_checkpoint",
]
