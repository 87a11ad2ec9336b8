"""``python -m dasrlib.train --params notebooks/params/demo.yaml [--set key=value ...]``.

The same command is ``dasr train ...``; this module holds its options (`add_arguments`) and what
it does (`run`), and `main` is the module entry point.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from dasrlib.config import SHOWN_CHARACTERS, ConfigError, read_config_file, safe_load_yaml, to_dict
from dasrlib.data import TRAINING_INPUT_ERRORS
from dasrlib.device import DeviceUnavailableError, resolve_device
from dasrlib.models.checkpoints import CheckpointError
from dasrlib.train.config import config_from_parameters, explicit_names
from dasrlib.train.loop import TrainingIncompleteError, require_finished, train
from dasrlib.train.state import RunFolderLocked
from dasrlib.train.validation import validation_summary

__all__ = ["DESCRIPTION", "PROG", "add_arguments", "main", "run"]

PROG = "python -m dasrlib.train"
DESCRIPTION = "Train SRResNet / DASR (what notebooks/train.ipynb runs)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m dasrlib.train`` / ``dasr train``."""
    parser.add_argument("--params", type=Path, help="a notebook parameter file (YAML)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override one field"
    )
    parser.add_argument("--print-config", action="store_true", help="print the config and exit")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Build the config of a parameter file (+ ``--set`` overrides, flat or dotted names), train.

    Exit status 0 when trained (or the config printed), 2 for a bad config or device, 1 when the
    training inputs or the run folder fail, 3 when a stage stopped short of its iterations (a
    time limit: `require_finished`); errors are one line on stderr after ``parser.prog``.
    """
    prog = parser.prog
    try:
        sets = {}
        for item in args.set:
            key, sep, value = item.partition("=")
            if not sep:
                parser.error(f"--set expects KEY=VALUE, got {_clipped(item)}")
            sets[key.strip()] = safe_load_yaml(value)
        parameters: dict[str, Any] = {} if args.params is None else read_config_file(args.params)
        config = config_from_parameters(
            parameters, overrides=sets, explicit=explicit_names(parameters, sets)
        )
        resolve_device(config.run.device)
    except (ConfigError, DeviceUnavailableError, yaml.YAMLError) as error:
        return _fail(prog, error, 2)
    if args.print_config:
        print(yaml.safe_dump(to_dict(config), sort_keys=False))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        run_dir = train(config)
    except ConfigError as error:  # the run folder's checkpoint was made with another config
        return _fail(prog, error, 2)
    except (*TRAINING_INPUT_ERRORS, CheckpointError, RunFolderLocked) as error:
        return _fail(prog, error, 1)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"run folder: {run_dir}")
        if (run_dir / "val.csv").is_file():
            print(validation_summary(run_dir).to_string(index=False))
    try:
        require_finished(config)
    except TrainingIncompleteError as error:
        return _fail(prog, error, 3)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dasrlib.train``: the same options and exit status as ``dasr train``."""
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv), parser)


def _fail(prog: str, error: BaseException, status: int) -> int:
    print(f"{prog}: error: {_clipped(str(error))}", file=sys.stderr)
    return status


def _clipped(text: str) -> str:
    """`text` on one line, each run of more than 200 non-blank characters cut to a short prefix
    and "..." (a path or value megabytes long is not printed whole)."""
    one_line = " ".join(text.split())
    return re.sub(r"\S{201,}", lambda match: match[0][:SHOWN_CHARACTERS] + "...", one_line)
