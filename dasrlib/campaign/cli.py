"""``python -m dasrlib.campaign run --budget 140m [--set NAME=VALUE ...]``, ``status`` and
``table2`` (Table 2 of the published models, as a budget writes it).

The same command is ``dasr campaign run ...`` / ``dasr campaign status``; this module holds its
options (`add_arguments`) and what it does (`run`); `main` is the module entry point.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from dasrlib.campaign.plan import CampaignPlan, parse_duration
from dasrlib.campaign.publish import PublishRefused, read_history
from dasrlib.campaign.run import CampaignPaths, run_budget
from dasrlib.campaign.tables import write_published_table2
from dasrlib.config import ConfigError, safe_load_yaml
from dasrlib.data import TRAINING_INPUT_ERRORS
from dasrlib.device import DeviceUnavailableError, resolve_device
from dasrlib.models.checkpoints import CheckpointError
from dasrlib.train.trainer import NonFiniteLossError

__all__ = ["DESCRIPTION", "PROG", "add_arguments", "main", "run"]

PROG = "python -m dasrlib.campaign"
DESCRIPTION = (
    "Training campaigns: run one wall-clock budget, show what is published, or write Table 2 "
    "of the published models."
)


def _plan(items: Sequence[str], parser: argparse.ArgumentParser) -> CampaignPlan:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set expects NAME=VALUE, got {item!r}")
        overrides[key.strip()] = safe_load_yaml(value)  # bounded: no alias bombs
    return CampaignPlan.from_overrides(overrides)


def _status(paths: CampaignPaths) -> int:
    history = read_history(paths.resolved().models)
    print(json.dumps({"budgets": len(history["budgets"]), "state": history["state"]}, indent=1))
    return 0


def _table2(models: Path, device: str, parser: argparse.ArgumentParser) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        written = write_published_table2(models.resolve(), device=resolve_device(device))
    except (
        OSError,
        ValueError,
        KeyError,
        RuntimeError,
        CheckpointError,
        DeviceUnavailableError,
    ) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1
    print("wrote", ", ".join(str(path) for path in written.values()))
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The actions ``run``, ``status`` and ``table2`` and their options."""
    commands = parser.add_subparsers(dest="campaign_command", required=True)
    run_parser = commands.add_parser("run", help="one budget: continue, train, evaluate, publish")
    run_parser.add_argument("--budget", required=True, help="wall-clock budget: 140m, 2h, 900s")
    run_parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    status = commands.add_parser("status", help="what is published")
    table2 = commands.add_parser(
        "table2", help="Table 2 of the published models into <models>/table2.{csv,json,md}"
    )
    table2.add_argument("--device", default="auto", help="where the latency is measured")
    for sub in (run_parser, status, table2):
        sub.add_argument("--models", type=Path, default=Path("results/models"))
    for sub in (run_parser, status):
        sub.add_argument("--work", type=Path, default=Path("results/campaign"))
    run_parser.add_argument("--testsets", type=Path, default=Path("data/testsets"))


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``status``: print what is published. ``table2``: write Table 2 of the published models (1
    when there are none). ``run``: one budget; 2 for a bad budget, ``--set`` or device, 1 when
    training, evaluation or publishing fails."""
    if args.campaign_command == "status":
        return _status(CampaignPaths(models=args.models, work=args.work))
    if args.campaign_command == "table2":
        return _table2(args.models, args.device, parser)
    try:
        budget_s = parse_duration(args.budget)
        plan = _plan(args.set, parser)
        resolve_device(plan.device)
    except (ValueError, TypeError, DeviceUnavailableError, yaml.YAMLError) as error:
        print(f"{parser.prog}: error: {' '.join(str(error).split())}", file=sys.stderr)  # one line
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    paths = CampaignPaths(models=args.models, work=args.work, testsets=args.testsets)
    try:
        record = run_budget(plan, budget_s=budget_s, paths=paths)
    except (
        *TRAINING_INPUT_ERRORS,
        CheckpointError,
        ConfigError,
        NonFiniteLossError,
        PublishRefused,
    ) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1
    if record is not None:
        print(record["note"])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dasrlib.campaign``: the same actions and exit status as ``dasr campaign``."""
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv), parser)
