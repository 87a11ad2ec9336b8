"""GPU leases: DASR and its SRResNet baseline trained a short GPU loan at a time.

A lease is one call of at most 590 s on a lent GPU machine that carries at most 64 MiB of
ignored files in and returns at most 8 files (16 MiB each, 64 MiB together) out. Three steps:

- ``python -m dasrlib.lease prepare`` (here): fill ``.carry/lease/`` with a documented subset of
  the shared training images and the evaluation HR images as lossless WebP, the last published
  weights and ``history.json``; check the 64 MiB limit; print the device command.
- ``scripts/lease.sh`` (on the device, ``python -m dasrlib.lease run``): check the environment,
  continue training from the published weights inside a wall-time budget (warm restart: fresh
  Adam state, the iteration count and learning-rate schedule continue), evaluate on the GPU,
  write the fp16 weights, ``eval.csv``, ``lease.json`` and one ``logs.tar.gz`` into ``$OUT``.
- ``python -m dasrlib.lease publish RETURNED`` (here): update ``results/models/``.

This module imports only the standard library so that ``run`` can report missing packages
before anything imports them.
"""

from __future__ import annotations

MIB = 1 << 20
CARRY_LIMIT_BYTES = 64 * MIB
"""Everything the call carries (the ``carry`` paths) together."""
RETURN_MAX_FILES = 8
RETURN_FILE_LIMIT_BYTES = 16 * MIB
RETURN_TOTAL_LIMIT_BYTES = 64 * MIB
CALL_LIMIT_S = 590
"""The longest device call; `LeaseSettings.budget_s` stays below it."""

CARRY_DIR = ".carry/lease"
"""The carried folder, relative to the repository root (ignored by git)."""

EVAL_SETS: tuple[str, ...] = ("Set5", "Set14", "B100")
EVAL_LEVELS: tuple[str, ...] = ("bicubic", "weak", "standard", "severe")
REQUIRED_MODULES: tuple[str, ...] = ("torch", "numpy", "PIL", "safetensors", "yaml", "pandas")
"""What ``run`` needs on the device (torch 2.11, Python 3.12 there)."""

RETURNED_FILES: tuple[str, ...] = (
    "dasr.safetensors",
    "srresnet.safetensors",
    "eval.csv",
    "lease.json",
    "logs.tar.gz",
)
"""What a lease writes into ``$OUT`` (the weights only when the model exists)."""

__all__ = [
    "CALL_LIMIT_S",
    "CARRY_DIR",
    "CARRY_LIMIT_BYTES",
    "EVAL_LEVELS",
    "EVAL_SETS",
    "MIB",
    "REQUIRED_MODULES",
    "RETURNED_FILES",
    "RETURN_FILE_LIMIT_BYTES",
    "RETURN_MAX_FILES",
    "RETURN_TOTAL_LIMIT_BYTES",
]
