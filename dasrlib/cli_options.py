"""Command-line options that several ``dasr`` subcommands share, defined once.

`add_model_options` is the one group of model options (which checkpoint, device, precision,
degradation ranges) of every subcommand that loads a trained model: ``dasr upscale``,
``dasr predict`` and ``dasr export``. `add_device_option` and `add_precision_option` are its
parts, for commands that take a device or a precision without a checkpoint (``dasr profile``).
"""

from __future__ import annotations

import argparse

from dasrlib.degradation.levels import Level

__all__ = [
    "LEVEL_CHOICES",
    "MODEL_OPTION_NAMES",
    "PRECISIONS",
    "add_device_option",
    "add_model_options",
    "add_precision_option",
]

PRECISIONS = ("auto", "fp32", "tf32", "bf16", "fp16")
LEVEL_CHOICES = tuple(level.value for level in Level if level is not Level.BICUBIC)
# The options `add_model_options` adds, in order (tests check each model command takes them all).
MODEL_OPTION_NAMES = ("--model", "--official", "--device", "--precision", "--level")

_AUTO_PRECISION_HELP = (
    "auto: bf16 on a CUDA GPU or a CPU that has it (AVX512-BF16 / AMX), else fp32; "
    "bf16 runs channels-last. A bf16 / fp16 overflow falls back to fp32"
)


def add_device_option(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    *,
    default: str = "auto",
    note: str = "",
) -> None:
    """``--device``: auto (CUDA if present), cpu, cuda:0, ... (resolved by `resolve_device`)."""
    parser.add_argument(
        "--device",
        default=default,
        help=f"auto (CUDA if present), cpu, cuda:0, ...{note} (default {default})",
    )


def add_precision_option(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    *,
    default: str = "auto",
    choices: tuple[str, ...] = PRECISIONS,
    note: str = "",
) -> None:
    """``--precision``: one of `PRECISIONS` (``auto`` only where `choices` has it)."""
    detail = _AUTO_PRECISION_HELP if "auto" in choices else ", ".join(choices)
    parser.add_argument(
        "--precision",
        default=default,
        choices=choices,
        help=f"{detail}{note} (default {default})",
    )


def add_model_options(
    parser: argparse.ArgumentParser,
    *,
    device: str = "auto",
    precision: str = "auto",
    precision_note: str = "",
) -> None:
    """The model options of a command that loads a trained model (`MODEL_OPTION_NAMES`).

    ``--model CKPT`` or ``--official NET_G NET_P`` (one of them; neither: the project's trained
    DASR by the rule of `dasrlib.models.loading.choose_model`), ``--device``, ``--precision``
    and ``--level`` (whose ranges map the 33-slot vector v to physical units and back).
    `device` and `precision` are this command's defaults.
    """
    group = parser.add_argument_group("model options")
    which = group.add_mutually_exclusive_group()
    which.add_argument(
        "--model",
        metavar="CKPT",
        help="checkpoint: this project's .safetensors (DASR or a baseline), or a third-party SR "
        "model spandrel recognises. Default: results/models/dasr/model.safetensors",
    )
    which.add_argument(
        "--official",
        nargs=2,
        metavar=("NET_G", "NET_P"),
        help="the official DASR release files (generator and predictor)",
    )
    add_device_option(group, default=device)
    add_precision_option(group, default=precision, note=precision_note)
    group.add_argument(
        "--level",
        default=Level.SEVERE.value,
        choices=LEVEL_CHOICES,
        help="whose parameter ranges map v to physical units and back (default: severe, widest)",
    )
