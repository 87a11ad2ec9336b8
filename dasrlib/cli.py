"""The ``dasr`` command: one command line with a subcommand per task.

    dasr upscale    super-resolve images to PNG                     (this module)
    dasr predict    the predicted degradation in physical units     (this module)
    dasr train      train SRResNet / DASR from a parameter file     (dasrlib/train/cli.py)
    dasr fetch      download DIV2K or pretrained weights            (dasrlib/data.py)
    dasr testsets   build the seeded test sets                      (dasrlib/testsets.py)
    dasr profile    parameters, GMACs, latency of a model           (dasrlib/profiling.py)
    dasr export     ONNX graphs of a checkpoint                     (dasrlib/export.py)
    dasr campaign   training campaigns: a budget, status, Table 2   (dasrlib/campaign/cli.py)

Each subcommand's options and behaviour live beside its code, in an ``add_arguments(parser)``
and a ``run(args, parser) -> exit status`` that its module entry point (``python -m
dasrlib.train``, ``python -m dasrlib.data fetch``, ...) runs too; `SUBCOMMANDS` lists them. The
model options of the commands that load a checkpoint are one group,
`dasrlib.cli_options.add_model_options`.

    dasr upscale IN... -o OUT [--model CKPT | --official NET_G NET_P] [--tile N] [--overlap N]
                       [--precision auto|fp32|tf32|bf16|fp16] [--device auto]
                       [--set NAME=VALUE ...] [--level severe] [--keep-gray] [--overwrite]
    dasr predict IN... [--json] [--model CKPT | --official NET_G NET_P] [--level severe]

IN may be files, folders (their image files, not recursive) or glob patterns (``**`` recurses);
inputs are taken in the order given, the files of one folder or pattern in name order.
Folders and globs leave out earlier outputs of ``dasr upscale`` (PNGs carrying its mark), so a
second run into the input folder does not upscale them again; name such a file to take it.
A file that cannot be read or processed is reported on stderr in one line with its cause and
skipped; the exit status is 1 if any input failed, 2 for a usage error (a bad option value, a
model that cannot be loaded, a device that is not there).

``upscale`` writes only new files or (with ``--overwrite``) files an earlier ``dasr upscale``
wrote; any other existing file at an output path is left alone and that image fails, and so does
an output another process is writing (each output is claimed while it is computed). The output
folder is checked for writability before the model is loaded.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from dasrlib import data, export, profiling, testsets
from dasrlib.campaign import cli as campaign_cli
from dasrlib.cli_options import add_model_options
from dasrlib.data import IMAGE_EXTENSIONS
from dasrlib.degradation.edit import PARAMETER_ALIASES, edit_vector, parse_edits
from dasrlib.degradation.levels import Level
from dasrlib.degradation.vector import SLOTS, decode_vector, parameter_names
from dasrlib.device import (
    DeviceUnavailableError,
    describe_precision,
    module_device,
)
from dasrlib.inference import DEFAULT_TILE, predict_vector, upscale_to_file
from dasrlib.io import (
    ImageReadError,
    check_writable_folder,
    claim_output,
    is_upscale_output,
    read_image,
    remove_stale_temporaries,
)
from dasrlib.models.loading import choose_model, is_dasr
from dasrlib.tiling import DEFAULT_OVERLAP, TileMemoryError
from dasrlib.train import cli as train_cli

__all__ = ["SUBCOMMANDS", "Subcommand", "build_parser", "main"]

logger = logging.getLogger("dasrlib.cli")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# What one image can fail with (FloatingPointError: the network gave NaN/Inf for that image;
# TileMemoryError: the image untiled, or one tile, would not fit in memory).
_IMAGE_ERRORS = (
    ImageReadError,
    OSError,
    ValueError,
    RuntimeError,
    FloatingPointError,
    TileMemoryError,
)
# What loading the model or checking the options can fail with (CheckpointError is a ValueError).
_USAGE_ERRORS = (ValueError, FileNotFoundError, DeviceUnavailableError)

_PARAMETER_HELP = (
    "Degradation parameters for --set (physical units; slots 0-32 of v, Eq. 1; the ranges "
    "of each level are in dasrlib/degradation/levels.py): "
    + ", ".join(parameter_names())
    + ". Aliases: "
    + ", ".join(f"{alias} = {' + '.join(names)}" for alias, names in PARAMETER_ALIASES.items())
    + ". Units: kernel size and sigma in LR pixels, rotation in radians, noise level as Gaussian "
    "sigma in 0-255 (or Poisson scale when the noise type is poisson), JPEG quality 0-100, resize "
    "scale as a factor; one-hot parameters take an option name (noise1_type=gaussian|poisson, "
    "resize1_mode=area|bilinear|bicubic) or 'none'. Values are mapped to [0, 1] with the ranges "
    "of --level. Parameters not set keep the predicted value."
)


# --------------------------------------------------------------------------------------------
# Inputs and outputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Failure:
    path: str
    cause: str


def _expand_inputs(patterns: Sequence[str]) -> tuple[list[Path], list[_Failure]]:
    """Files, folders (image files inside, not recursive) and globs -> unique files in order.

    The order is the one given on the command line; a folder's or a pattern's files come in
    name order at its place. A file named twice is taken once, at its first place.

    Folders and globs leave out earlier ``dasr upscale`` outputs (`is_upscale_output`); a file
    named on its own is always taken.
    """
    found: dict[Path, None] = {}  # insertion-ordered set
    failures: list[_Failure] = []
    earlier_outputs = 0
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            images = [
                p
                for p in path.iterdir()
                if p.is_file()
                and p.suffix.lower() in IMAGE_EXTENSIONS
                and not p.name.startswith(".")
            ]
            if not images:
                failures.append(_Failure(pattern, "folder holds no image files"))
        elif path.exists():
            found.setdefault(path)
            continue
        elif glob.has_magic(pattern):
            images = [Path(m) for m in glob.glob(pattern, recursive=True) if Path(m).is_file()]
            if not images:
                failures.append(_Failure(pattern, "pattern matches no files"))
        else:
            failures.append(_Failure(pattern, "no such file or folder"))
            continue
        images = sorted(set(images), key=str)
        fresh = [p for p in images if p not in found and not is_upscale_output(p)]
        earlier_outputs += sum(1 for p in images if p not in found) - len(fresh)
        found.update(dict.fromkeys(fresh))
    if earlier_outputs:
        tqdm.write(
            f"dasr: note: left out {earlier_outputs} earlier output(s) of dasr upscale found in "
            "the input folders (name a file to take it)",
            file=sys.stderr,
        )
    return list(found), failures


def _report(failure: _Failure) -> None:
    tqdm.write(f"dasr: error: {failure.path}: {failure.cause}", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def _load(args: argparse.Namespace) -> torch.nn.Module:
    """The model `choose_model` picks (the rule the slider app uses too), said on stderr."""
    choice = choose_model(args.model, official_paths=args.official, device=args.device)
    print(f"dasr: model: {choice.describe()}", file=sys.stderr)
    return choice.model


def _log_warnings() -> None:
    """The log format of the image commands: warnings, or everything with ``dasr -v``."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _cmd_upscale(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    _log_warnings()
    if args.tile < 0:
        print(f"dasr upscale: error: --tile must be >= 0, got {args.tile}", file=sys.stderr)
        return EXIT_USAGE
    if args.overlap < 0:
        print(f"dasr upscale: error: --overlap must be >= 0, got {args.overlap}", file=sys.stderr)
        return EXIT_USAGE
    if args.suffix is not None and ("/" in args.suffix or os.sep in args.suffix):
        print(
            f"dasr upscale: error: --suffix {args.suffix!r} holds a path separator; it is "
            "appended to each file name",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if Path(args.output).exists() and not Path(args.output).is_dir():
        print(f"dasr upscale: error: -o {args.output!r} is a file, not a folder", file=sys.stderr)
        return EXIT_USAGE
    try:
        out_dir = check_writable_folder(args.output)  # before any model is loaded or image run
    except OSError as error:
        print(f"dasr upscale: error: -o: {error.strerror or error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        edits = parse_edits(args.set)
        model = _load(args)
    except _USAGE_ERRORS as error:
        print(f"dasr: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if edits and not is_dasr(model):
        print(
            "dasr: error: --set needs a DASR model (this one predicts no degradation)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    logger.info("upscale: %s", describe_precision(module_device(model), args.precision))
    inputs, failures = _expand_inputs(args.inputs)
    for failure in failures:
        _report(failure)
    scale = int(getattr(model, "scale", 4))
    suffix = args.suffix if args.suffix is not None else f"_x{scale}"
    created = not out_dir.exists()  # removed again below if nothing lands in it
    remove_stale_temporaries(out_dir)  # what a killed earlier run left (0-byte .*.tmp files)
    input_set = {p.resolve() for p in inputs}
    claimed: dict[Path, Path] = {}
    written = 0
    tile = args.tile if args.tile > 0 else None
    for path in tqdm(inputs, desc="dasr upscale", unit="image", file=sys.stderr, disable=None):
        out_path = out_dir / f"{path.stem}{suffix}.png"
        resolved = out_path.resolve()
        try:
            # The claim makes a concurrent `dasr upscale` of the same output fail, not race.
            with claim_output(out_path):
                refusal = _refusal(out_path, input_set, claimed, overwrite=args.overwrite)
                if refusal is None:
                    claimed[resolved] = path
                    _upscale_one(path, out_path, model, edits, args, tile=tile)
                    written += 1
                    continue
                failures.append(_Failure(str(path), refusal))
        except _IMAGE_ERRORS as error:
            failures.append(_Failure(str(path), _cause(error, path)))
        _report(failures[-1])
    if created and written == 0 and out_dir.is_dir() and not any(out_dir.iterdir()):
        out_dir.rmdir()  # a run that wrote nothing leaves nothing behind
    print(
        f"dasr: wrote {written} of {len(inputs)} images to {out_dir}; {len(failures)} failed",
        file=sys.stderr,
    )
    return EXIT_FAILED if failures else EXIT_OK


def _cause(error: BaseException, path: Path) -> str:
    """``error`` as the cause of a failed image, without the image path the report already gives."""
    text = str(error)
    if text.startswith(f"{path}: "):
        text = text[len(f"{path}: ") :]
    return f"{type(error).__name__}: {text}"


def _refusal(
    out_path: Path, input_set: set[Path], claimed: dict[Path, Path], *, overwrite: bool
) -> str | None:
    """Why `out_path` may not be written (held by its claim), or None."""
    resolved = out_path.resolve()
    if resolved in input_set:
        return f"output {out_path} is an input file; not touched"
    if resolved in claimed:
        return f"output {out_path} is already the output of {claimed[resolved]}"
    if out_path.exists() and not overwrite:
        return f"output {out_path} exists (pass --overwrite to replace it)"
    if out_path.exists() and not is_upscale_output(out_path):
        return (
            f"output {out_path} exists and was not written by dasr upscale; not replaced, even "
            "with --overwrite (choose another -o or --suffix)"
        )
    return None


def _upscale_one(
    path: Path,
    out_path: Path,
    model: torch.nn.Module,
    edits: dict[str, float | str],
    args: argparse.Namespace,
    *,
    tile: int | None,
) -> None:
    image = read_image(path)
    v = None
    if edits:
        predicted = predict_vector(image, model, precision=args.precision)
        v = edit_vector(predicted, edits, level=args.level)
    upscale_to_file(
        image,
        model,
        out_path,
        tile=tile,
        overlap=args.overlap,
        precision=args.precision,
        v=v,
        keep_gray=args.keep_gray,
        overwrite=args.overwrite,
    )


def _format_value(value: float | str) -> str:
    return value if isinstance(value, str) else f"{value:.4g}"


def _clamped_slots(v: torch.Tensor) -> dict[str, float]:
    """{slot name: predicted value} of the slots of `v` outside [0, 1], the trained range."""
    return {
        SLOTS[index].name: round(float(value), 6)
        for index, value in enumerate(v.tolist())
        if not 0.0 <= value <= 1.0
    }


# An excursion of a slot of v beyond [0, 1] by at most this much is the predictor's ordinary
# overshoot (a hundredth of a slot's range); clamping it changes nothing a user would act on.
CLAMP_NOTE_TOLERANCE = 0.01


def _clamp_note(
    clamped: dict[str, float], *, tolerance: float = CLAMP_NOTE_TOLERANCE
) -> str | None:
    """One line summarising the slots clamped by more than `tolerance`, or None if there are none.

    Says how many slots were beyond [0, 1] by more than `tolerance` and which went furthest.
    """
    excursions = {name: max(-value, value - 1.0) for name, value in clamped.items()}
    beyond = {name: excess for name, excess in excursions.items() if excess > tolerance}
    if not beyond:
        return None
    worst = max(beyond, key=beyond.__getitem__)
    return (
        f"note: {len(beyond)} of the {len(SLOTS)} slots of v were outside [0, 1] by more than "
        f"{tolerance:g} and were clamped before decoding; largest: {worst} = {clamped[worst]:.4g} "
        f"({beyond[worst]:.4g} beyond)"
    )


def _cmd_predict(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    _log_warnings()
    try:
        model = _load(args)
    except _USAGE_ERRORS as error:
        print(f"dasr: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if not is_dasr(model):
        print(
            "dasr: error: predict needs a DASR model (with a degradation predictor)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    inputs, failures = _expand_inputs(args.inputs)
    for failure in failures:
        _report(failure)
    records = []
    for path in tqdm(inputs, desc="dasr predict", unit="image", file=sys.stderr, disable=None):
        try:
            image = read_image(path)
            v = predict_vector(image, model, precision=args.precision)
        except _IMAGE_ERRORS as error:
            failures.append(_Failure(str(path), _cause(error, path)))
            _report(failures[-1])
            continue
        with torch.no_grad():
            a = model.expert_weights(v[None].to(next(model.parameters()).device))[0].cpu()
        # P's output is unbounded; physical values are decoded from v clamped to [0, 1] (the
        # trained range), so a rotation stays in [-pi, pi] and a flag in [0, 1].
        clamped = _clamped_slots(v)
        physical = decode_vector(v.clamp(0.0, 1.0), level=args.level)
        records.append(
            {
                "path": str(path),
                "level": Level(args.level).value,
                "physical": physical,
                "v": [round(float(x), 6) for x in v],
                "clamped": clamped,
                "expert_weights": [round(float(x), 6) for x in a],
            }
        )
        if not args.json:
            print(f"{path}  (decoded with the {Level(args.level).value} ranges)")
            for name, value in physical.items():
                print(f"  {name:<20} {_format_value(value)}")
            note = _clamp_note(clamped)
            if note is not None:
                print(f"  {note}")
            print(f"  {'expert_weights':<20} " + " ".join(f"{float(x):.4g}" for x in a))
    if args.json:
        print(json.dumps(records, indent=2))
    return EXIT_FAILED if failures else EXIT_OK


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------


def _add_upscale_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IN", help="image files, folders or globs")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
    add_model_options(parser)
    parser.add_argument(
        "--tile",
        type=int,
        default=DEFAULT_TILE,
        help=f"tile size in LR pixels, bounds memory (default {DEFAULT_TILE}; 0: whole image)",
    )
    parser.add_argument(
        "--overlap",
        type=int,
        default=DEFAULT_OVERLAP,
        help=f"LR pixels of context around each tile (default {DEFAULT_OVERLAP}, the DASR "
        "expert's receptive field: tiled equals untiled)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override one predicted degradation parameter (repeatable); names below",
    )
    parser.add_argument("--keep-gray", action="store_true", help="write gray inputs as gray PNGs")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--suffix", default=None, help="output name suffix (default _x<scale>)")


def _add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IN", help="image files, folders or globs")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    add_model_options(parser)


Runner = Callable[[argparse.Namespace, argparse.ArgumentParser], int]
"""What runs a subcommand: (its parsed options, its parser for usage errors) -> exit status."""


@dataclass(frozen=True)
class Subcommand:
    """One ``dasr`` subcommand: its name and help, and the two functions beside its code that
    add its options to a parser and run it (returning the exit status)."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Runner
    description: str | None = None
    epilog: str | None = None


# Every subcommand of `dasr`, in the order `dasr --help` lists them. A new command is one entry
# here plus an add_arguments / run pair in its module (and, if wanted, a `python -m` main).
SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand(
        "upscale",
        "super-resolve images to PNG",
        _add_upscale_arguments,
        _cmd_upscale,
        description="Super-resolve images. Writes OUT/<stem>_x4.png (8-bit in: 8-bit out, "
        "16-bit in: 16-bit out; alpha kept). Never writes onto an input; an existing output is "
        "an error for that image unless --overwrite.",
        epilog=_PARAMETER_HELP,
    ),
    Subcommand(
        "predict",
        "print the predicted degradation in physical units",
        _add_predict_arguments,
        _cmd_predict,
        description="Print the degradation DASR's predictor P sees in each image (Sec. 3.1), "
        "decoded from the 33-slot vector into physical units, and the expert weights.",
    ),
    Subcommand(
        "train",
        "train SRResNet / DASR from a parameter file (python -m dasrlib.train)",
        train_cli.add_arguments,
        train_cli.run,
        description=train_cli.DESCRIPTION,
    ),
    Subcommand(
        "fetch",
        f"{data.FETCH_HELP} (python -m dasrlib.data fetch)",
        data.add_fetch_arguments,
        data.run_fetch,
        description=data.__doc__,
    ),
    Subcommand(
        "testsets",
        "build the seeded LR test sets (python -m dasrlib.testsets)",
        testsets.add_arguments,
        testsets.run,
        description=testsets.__doc__,
    ),
    Subcommand(
        "profile",
        "parameters, GMACs, latency of a model (python -m dasrlib.profiling)",
        profiling.add_arguments,
        profiling.run,
        description=profiling.__doc__,
    ),
    Subcommand(
        "export",
        "ONNX graphs of a checkpoint (python -m dasrlib.export)",
        export.add_arguments,
        export.run,
        description=export.DESCRIPTION,
    ),
    Subcommand(
        "campaign",
        "training campaigns: a budget, status, Table 2 (python -m dasrlib.campaign)",
        campaign_cli.add_arguments,
        campaign_cli.run,
        description=campaign_cli.DESCRIPTION,
    ),
)


def build_parser() -> argparse.ArgumentParser:
    """The ``dasr`` parser: one subparser per entry of `SUBCOMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="dasr",
        description="Degradation-adaptive x4 super-resolution (DASR, ECCV 2022).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in SUBCOMMANDS:
        sub = commands.add_parser(
            command.name,
            help=command.help,
            description=command.description,
            epilog=command.epilog,
        )
        command.add_arguments(sub)
        sub.set_defaults(run_subcommand=command.run, subcommand_parser=sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dasr`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return int(args.run_subcommand(args, args.subcommand_parser))


if __name__ == "__main__":
    sys.exit(main())
