"""Training (Sec. 4.1, Eq. 3): SRResNet pretraining, DASR, and equal-budget baselines.

One module per concern, imports running down this list:

- `config`: `TrainConfig`, its typed sections, validation, `resume_hash`, flat names.
- `state`: checkpoint pair files, the resume decision, a run's ``run.json`` read back.
- `stream`: the deterministic data stream (exact resume, its position in a checkpoint) and seed
  derivation.
- `validation`: held-out validation set; `validation_summary`, `validation_example`.
- `build`: generator, discriminator, VGG loss, EMA, torchrun / DDP.
- `logger`: progress bar, ``metrics.csv``, ``val.csv``, tensorboard.
- `trainer`: one stage's state and its optimiser step.
- `loop`: `train` (stages, step, log, validate, save).
- `cli` (``python -m dasrlib.train``).

Import each name from the submodule that defines it: this package gathers none.
"""
