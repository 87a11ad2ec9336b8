"""Degradation synthesis rate (samples/s) per level, beside the rate a DASR training step consumes.

    python benchmarks/degradation.py --device auto [--batches 10] [--train-its 41]

Each level degrades batches of 24 HR patches of 256 x 256 (natural photos that ship with
scikit-image / scikit-learn / matplotlib) on the device, with a generator on the same device.
"training pairs" times the full `TrainingPairSource.next_batch` (patch sampling, USM sharpening,
level draw, degradation, v, queue swap) at the paper's level mix once the queue is full.

The rate a training step consumes is `train_its` x batch (the H100 reference: DASR N = 5 trains at
41-44 it/s with batch 24 on one H100, i.e. about 984 samples/s). The issue's target on a GPU is a
synthesis rate at least 3 times that. Results go to results/benchmarks/degradation_<device>.json.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from dasrlib.data import EmbeddedPhotos, PatchSampler
from dasrlib.degradation.levels import Level
from dasrlib.degradation.pairs import TrainingPairSource
from dasrlib.degradation.pipeline import degrade
from dasrlib.device import resolve_device
from dasrlib.io import atomic_write_text
from dasrlib.results import run_metadata

LEVELS = (Level.BICUBIC, Level.WEAK, Level.STANDARD, Level.SEVERE)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], object], device: torch.device, *, warmup: int, repeats: int) -> float:
    """Seconds per call of `fn` (mean over `repeats` after `warmup` calls)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeats


def _degrade_next(
    batches: Iterator[torch.Tensor], level: Level, generator: torch.Generator
) -> None:
    degrade(next(batches), level, generator=generator)


def synthesis_rates(
    device: torch.device,
    *,
    batch: int,
    hr_size: int,
    batches: int,
    warmup: int,
    queue_size: int,
    seed: int,
    consumed: float,
) -> dict[str, dict[str, float]]:
    """ms/batch, samples/s and the ratio to ``consumed`` samples/s, per level and for the
    training mix (`TrainingPairSource.next_batch` once its queue is full)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    sampler = PatchSampler(
        EmbeddedPhotos(preload=True),
        patch_size=hr_size,
        generator=generator,
        device=device,
    )
    pool = [sampler.sample(batch) for _ in range(min(4, batches))]

    def row(seconds: float) -> dict[str, float]:
        rate = batch / seconds
        return {
            "ms_per_batch": 1000 * seconds,
            "samples_per_s": rate,
            "ratio_to_training": rate / consumed,
        }

    results: dict[str, dict[str, float]] = {}
    for level in LEVELS:
        step = functools.partial(_degrade_next, itertools.cycle(pool), level, generator)
        results[level.value] = row(_time(step, device, warmup=warmup, repeats=batches))
    source = TrainingPairSource(
        sampler,
        batch_size=batch,
        queue_size=queue_size,
        generator=generator,
        device=device,
    )
    source.next_batch()  # fills the queue
    results["training_pairs"] = row(
        _time(source.next_batch, device, warmup=warmup, repeats=batches)
    )
    return results


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = resolve_device(args.device)
    consumed = args.train_its * args.batch
    results = synthesis_rates(
        device,
        batch=args.batch,
        hr_size=args.hr_size,
        batches=args.batches,
        warmup=args.warmup,
        queue_size=args.queue_size,
        seed=args.seed,
        consumed=consumed,
    )

    config = {
        "batch": args.batch,
        "hr_size": args.hr_size,
        "batches": args.batches,
        "warmup": args.warmup,
        "queue_size": args.queue_size,
        "train_its": args.train_its,
        "seed": args.seed,
    }
    metadata = run_metadata(config=config, seed=args.seed, device=device)
    if args.commit and not metadata.get("git_commit"):
        metadata["git_commit"] = args.commit
    return {
        "benchmark": "degradation synthesis throughput",
        "device": str(device),
        "device_name": metadata["device"].get("gpu_name") or metadata["device"].get("processor"),
        "consumed_samples_per_s": consumed,
        # Other processes compete for a shared CPU: its load while this ran qualifies CPU figures.
        "load_average_1_5_15_min": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "target_ratio_on_gpu": 3.0,
        "results": results,
        "metadata": metadata,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--batch", type=int, default=24, help="samples per batch (paper: 24)")
    parser.add_argument("--hr-size", type=int, default=256, help="HR patch side (paper: 256)")
    parser.add_argument("--batches", type=int, default=10, help="timed batches per level")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches per level")
    parser.add_argument("--queue-size", type=int, default=192, help="training-pair queue")
    parser.add_argument(
        "--train-its",
        type=float,
        default=41.0,
        help="DASR training iterations/s to compare with (reference: 41 it/s on one H100)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: results/...)")
    parser.add_argument("--commit", default=None, help="git commit to record when git is absent")
    args = parser.parse_args(argv)

    report = run(args)
    device = torch.device(report["device"])
    out = args.out or Path("results/benchmarks") / f"degradation_{device.type}.json"
    atomic_write_text(out, json.dumps(report, indent=1) + "\n")

    consumed = report["consumed_samples_per_s"]
    print(f"device: {report['device']} ({report['device_name']})")
    print(f"training consumes {args.train_its:g} it/s x {args.batch} = {consumed:.0f} samples/s")
    print(f"{'level':>16} {'ms/batch':>10} {'samples/s':>10} {'x training':>10}")
    for name, row in report["results"].items():
        print(
            f"{name:>16} {row['ms_per_batch']:10.1f} {row['samples_per_s']:10.1f} "
            f"{row['ratio_to_training']:10.2f}"
        )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
