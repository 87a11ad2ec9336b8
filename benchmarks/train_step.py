"""Training-step throughput: DASR against a plain SRResNet step in the same run.

Every variant runs the training engine's own step (`dasrlib.train`: forward, Eq. 3 losses,
backward, Adam, EMA) on a fixed set of pre-synthesised batches, so the numbers are the network
side alone; the data side (patch sampling + GPU degradation + queue) is timed separately, and an
end-to-end row runs both together. Steps are timed one by one in interleaved rounds
(SRResNet, DASR, SRResNet, ...) and the median is reported; ``train_ratio`` is
DASR it/s / SRResNet it/s for the same objective and settings.

Objectives: ``l1`` (pixel only for SRResNet, pixel + regression for DASR: the PSNR-oriented
objective the campaign trains) and ``full`` (Eq. 3 with perceptual and GAN terms; the VGG19 has
random weights here, which costs the same as ImageNet weights).

    python benchmarks/train_step.py                          # GPU: batch 24, LR 64, bf16
    python benchmarks/train_step.py --device cpu --batch 4 --lr-size 16 --repeats 5
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import RESULTS_DIR, environment, summarize, sync, write_json  # noqa: E402

from dasrlib.degradation.pairs import TrainingBatch  # noqa: E402
from dasrlib.device import resolve_device  # noqa: E402
from dasrlib.models.mixed import PER_SAMPLE_IMPLS  # noqa: E402
from dasrlib.train.config import TrainConfig, config_from_parameters  # noqa: E402
from dasrlib.train.stream import DataStream  # noqa: E402
from dasrlib.train.trainer import Trainer  # noqa: E402

logger = logging.getLogger("train_step")


class FixedBatches:
    """Stands in for the data stream: cycles through pre-synthesised batches."""

    overlaps_step = False

    def __init__(self, batches: list[TrainingBatch]) -> None:
        self.batches = batches

    def batch(self, iteration: int) -> TrainingBatch:
        return self.batches[iteration % len(self.batches)]

    def prefetch(self, iteration: int) -> None:
        """Nothing to prepare: the batches exist."""


def bench_config(
    *,
    batch: int,
    lr_size: int,
    num_feat: int,
    num_block: int,
    experts: int,
    precision: str,
    queue_size: int,
    data_root: str | None = None,
) -> TrainConfig:
    """The training configuration every timed step uses (no validation, no resume, EMA on)."""
    return config_from_parameters(
        dict(
            name="bench",
            out_dir=str(Path(tempfile.gettempdir()) / "dasr_bench_runs"),
            batch_size=batch,
            patch_size=4 * lr_size,
            num_feat=num_feat,
            num_block=num_block,
            num_experts=experts,
            data_root=data_root,
            queue_size=queue_size,
            precision=precision,
            allow_random_vgg_for_tests=True,
            val_images=0,
            progress=False,
            resume="never",
            ema_decay=0.999,
        )
    )


def make_trainer(config: TrainConfig, device: torch.device) -> Trainer:
    return Trainer(config, device=device)


def synthesise(config: TrainConfig, device: torch.device, count: int) -> tuple[list, float]:
    """`count` real training batches from the data stream; returns them and batches/s."""
    trainer = make_trainer(config.replace(stage="pretrain"), device)
    trainer.prepare_data()
    stream: DataStream = trainer.data
    stream.batch(0)  # fills the queue
    sync(device)
    start = time.perf_counter()
    batches = [stream.batch(i) for i in range(1, count + 1)]
    sync(device)
    return batches, count / (time.perf_counter() - start)


def time_steps(
    trainers: dict[str, Trainer], *, warmup: int, repeats: int, device: torch.device
) -> dict[str, list[float]]:
    """Milliseconds per step of each trainer, interleaved round by round."""
    for trainer in trainers.values():
        for _ in range(warmup):
            trainer.step()
            trainer.iteration += 1
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(repeats):
        for name, trainer in trainers.items():
            sync(device)
            start = time.perf_counter()
            trainer.step()
            sync(device)
            times[name].append((time.perf_counter() - start) * 1000.0)
            trainer.iteration += 1
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=24)
    parser.add_argument("--lr-size", type=int, default=64, help="LR patch side (HR = 4x)")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--num-feat", type=int, default=64)
    parser.add_argument("--num-block", type=int, default=16)
    parser.add_argument("--experts", type=int, default=5)
    parser.add_argument("--data-root", default=None, help="HR images (default: embedded photos)")
    parser.add_argument("--queue-size", type=int, default=192, help="training-pair queue")
    parser.add_argument(
        "--objectives",
        default="l1,full",
        help="comma list of l1 (pixel + regression) and full (Eq. 3)",
    )
    parser.add_argument(
        "--impls",
        default=",".join(PER_SAMPLE_IMPLS),
        help="DASR per-sample implementations to time (comma list)",
    )
    parser.add_argument(
        "--channels-last", default="auto", help="auto (on for CUDA), on, off, or both"
    )
    parser.add_argument("--end-to-end", type=int, default=30, help="steps with data (0: skip)")
    parser.add_argument(
        "--prefetch", default="both", choices=["both", "on", "off"], help="end-to-end data prefetch"
    )
    parser.add_argument(
        "--compile", action="store_true", help="also time torch.compile'd generators (l1 objective)"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    device = resolve_device(args.device)
    base = bench_config(
        batch=args.batch,
        lr_size=args.lr_size,
        num_feat=args.num_feat,
        num_block=args.num_block,
        experts=args.experts,
        precision=args.precision,
        queue_size=args.queue_size,
        data_root=args.data_root,
    )
    if args.channels_last == "both":
        layouts: list[bool | None] = [False, True]
    else:
        layouts = [{"auto": None, "on": True, "off": False}[args.channels_last]]
    n_batches = 8
    batches, data_bps = synthesise(base, device, n_batches)
    print(f"data synthesis: {data_bps:.2f} batches/s ({args.batch} x {4 * args.lr_size}^2 HR)")
    rows = []
    ratios = {}
    for objective, channels_last in itertools.product(args.objectives.split(","), layouts):
        weights = {"perceptual_weight": 0.0, "adversarial_weight": 0.0} if objective == "l1" else {}
        common = dict(channels_last=channels_last, **weights)
        trainers = {"srresnet": make_trainer(base.replace(stage="baseline", **common), device)}
        for impl in args.impls.split(","):
            trainers[f"dasr_{impl}"] = make_trainer(
                base.replace(stage="dasr", per_sample_impl=impl, **common), device
            )
        for trainer in trainers.values():
            trainer.data = FixedBatches(batches)
        times = time_steps(trainers, warmup=args.warmup, repeats=args.repeats, device=device)
        layout = trainers["srresnet"].channels_last
        for name, values in times.items():
            stats = summarize(values)
            row = {
                "network": name,
                "objective": objective,
                "channels_last": layout,
                "precision": str(trainers[name].amp_dtype or "fp32"),
                "it_per_s": 1000.0 / stats["median_ms"],
                **stats,
            }
            rows.append(row)
            print(
                f"{objective:4s} cl={layout!s:5s} {name:14s} {row['it_per_s']:7.2f} it/s "
                f"(median {stats['median_ms']:.1f} ms, q1 {stats['q1_ms']:.1f}, "
                f"q3 {stats['q3_ms']:.1f})"
            )
        srresnet = 1000.0 / summarize(times["srresnet"])["median_ms"]
        for name in trainers:
            if name != "srresnet":
                ratio = 1000.0 / summarize(times[name])["median_ms"] / srresnet
                ratios[f"{objective}/cl={layout}/{name}"] = ratio
                print(f"  train_ratio {name} / srresnet = {ratio:.3f}")
        del trainers
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.compile:
        config = base.replace(perceptual_weight=0.0, adversarial_weight=0.0, compile=True)
        trainers = {
            "srresnet_compiled": make_trainer(config.replace(stage="baseline"), device),
            "dasr_grouped_compiled": make_trainer(config.replace(stage="dasr"), device),
        }
        for name, trainer in trainers.items():
            trainer.data = FixedBatches(batches)
            start = time.perf_counter()
            trainer.step()
            sync(device)
            print(f"{name}: first (compiling) step {time.perf_counter() - start:.1f} s")
        times = time_steps(trainers, warmup=args.warmup, repeats=args.repeats, device=device)
        for name, values in times.items():
            stats = summarize(values)
            rows.append(
                {
                    "network": name,
                    "objective": "l1",
                    "channels_last": trainers[name].channels_last,
                    "precision": str(trainers[name].amp_dtype or "fp32"),
                    "it_per_s": 1000.0 / stats["median_ms"],
                    **stats,
                }
            )
            print(f"l1   compiled {name:22s} {1000.0 / stats['median_ms']:7.2f} it/s")
        del trainers
    end_to_end = {}
    if args.end_to_end > 0:
        prefetch_modes = {"both": [True, False], "on": [True], "off": [False]}[args.prefetch]
        for stage, prefetch in itertools.product(("baseline", "dasr"), prefetch_modes):
            config = base.replace(
                stage=stage,
                perceptual_weight=0.0,
                adversarial_weight=0.0,
                prefetch_data=prefetch,
            )
            trainer = make_trainer(config, device)
            trainer.prepare_data()
            for _ in range(3):  # queue fill and autotuning
                trainer.advance()
            sync(device)
            start = time.perf_counter()
            for _ in range(args.end_to_end):
                trainer.advance()  # as the training loop: step, then prefetch the next batch
            sync(device)
            rate = args.end_to_end / (time.perf_counter() - start)
            network = "srresnet" if stage == "baseline" else "dasr"
            end_to_end[f"{network}/prefetch={prefetch}"] = rate
            print(f"end to end (data + l1 step) {network}, prefetch={prefetch}: {rate:.2f} it/s")
            del trainer
    first = args.objectives.split(",")[0]
    # train_ratio: the best per-sample implementation (and layout) for the first objective.
    candidates = {k: v for k, v in ratios.items() if k.startswith(f"{first}/")}
    headline_key = max(candidates, key=candidates.__getitem__, default=None)
    headline = None if headline_key is None else candidates[headline_key]
    payload = {
        "benchmark": "train_step",
        "environment": environment(device),
        "settings": {
            "batch": args.batch,
            "lr_size": args.lr_size,
            "hr_size": 4 * args.lr_size,
            "num_feat": args.num_feat,
            "num_block": args.num_block,
            "experts": args.experts,
            "precision": args.precision,
            "warmup": args.warmup,
            "repeats": args.repeats,
        },
        "train_ratio": headline,
        "train_ratio_best": headline_key,
        "train_ratios": ratios,
        "rows": rows,
        "data_batches_per_s": data_bps,
        "end_to_end_it_per_s": end_to_end,
    }
    out = args.out or RESULTS_DIR / f"train_step_{device.type}.json"
    write_json(out, payload)
    print(f"train_ratio (DASR / SRResNet, {first}, best: {headline_key}): {headline}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
