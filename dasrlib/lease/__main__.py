"""``python -m dasrlib.lease prepare | run | publish`` (docs/shared_training.md)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from dasrlib.lease import CALL_LIMIT_S, CARRY_DIR, MIB

DEVICE_COMMAND = "bash scripts/lease.sh"
"""What the lead passes to the device tool (``$OUT`` is set there)."""


def _prepare(args: argparse.Namespace) -> int:
    from dasrlib.lease.carry import prepare_carry
    from dasrlib.results import run_metadata

    manifest = prepare_carry(
        carry=args.carry,
        train_root=args.train,
        eval_root=args.eval,
        models_dir=args.models,
        train_budget_mib=args.train_budget_mib,
        workers=args.workers,
    )
    meta = run_metadata()
    manifest["commit"] = meta["git_commit"]
    manifest["commit_dirty"] = meta["git_dirty"]
    path = args.carry / "manifest.json"
    path.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    total = sum(p.stat().st_size for p in args.carry.rglob("*") if p.is_file())
    print(
        f"carry {args.carry}: {total / MIB:.2f} MiB ({manifest['n_train_images']} of "
        f"{manifest['n_train_sources']} training images, {manifest['n_eval_images']} eval images, "
        f"models: {[m['file'] for m in manifest['models']] or 'none'})"
    )
    print(f"device command: {DEVICE_COMMAND}")
    print(f'carry: ["{CARRY_DIR}"]   timeout_s: {CALL_LIMIT_S}')
    print("afterwards: python -m dasrlib.lease publish <files_at>")
    return 0


def _run(args: argparse.Namespace) -> int:
    from dasrlib.lease.run import (
        EnvironmentProblem,
        LeaseSettings,
        check_environment,
        default_work_dir,
        parse_sets,
        run_lease,
    )

    try:
        settings = LeaseSettings.from_overrides(parse_sets(args.set))
        check_environment(device=settings.device)
    except (EnvironmentProblem, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    manifest = json.loads((args.carry / "manifest.json").read_text(encoding="utf-8"))
    record = run_lease(
        carry=args.carry,
        out=args.out,
        work=args.work or default_work_dir(),
        settings=settings,
        commit=manifest.get("commit"),
    )
    print(
        json.dumps(
            {k: record.get(k) for k in ("lease", "wall_s", "state_after", "notes")}, indent=1
        )
    )
    print(json.dumps(record["returned"], indent=1))
    return 0


def _publish(args: argparse.Namespace) -> int:
    from dasrlib.lease.publish import publish_lease

    record = publish_lease(args.returned, args.results)
    print(record["note"])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dasrlib.lease", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser("prepare", help="fill the carried folder (here)")
    prepare.add_argument("--carry", type=Path, default=Path(CARRY_DIR))
    prepare.add_argument("--train", type=Path, default=Path("../shared/data/train"))
    prepare.add_argument("--eval", type=Path, default=Path("../shared/data/eval"))
    prepare.add_argument("--models", type=Path, default=Path("results/models"))
    prepare.add_argument("--train-budget-mib", type=float, default=None)
    prepare.add_argument("--workers", type=int, default=2)
    run = commands.add_parser("run", help="one lease on the device")
    run.add_argument("--carry", type=Path, default=Path(CARRY_DIR))
    run.add_argument("--out", type=Path, required=True)
    run.add_argument("--work", type=Path, default=None, help="scratch folder (default /tmp)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    publish = commands.add_parser("publish", help="update results/models from a lease's files")
    publish.add_argument("returned", type=Path)
    publish.add_argument("--results", type=Path, default=Path("results/models"))
    args = parser.parse_args(argv)
    if args.command == "prepare":
        if args.train_budget_mib is None:
            from dasrlib.lease.carry import DEFAULT_TRAIN_BUDGET_MIB

            args.train_budget_mib = DEFAULT_TRAIN_BUDGET_MIB
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        return _prepare(args)
    if args.command == "run":
        return _run(args)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return _publish(args)


if __name__ == "__main__":
    sys.exit(main())
