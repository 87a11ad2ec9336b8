"""Where a training iteration's time goes on this device: data synthesis per level, the step
alone, and the training command end to end (data + step + EMA + logging), prefetch off and on.

- synthesis: `degrade` of one batch of HR patches per level (weak, standard, severe) and a whole
  batch of the training mix (`DataStream.batch`: patches, degradation, USM target, queue);
- step: `Trainer.step` on pre-synthesised batches (SRResNet pixel loss; DASR pixel + regression);
- end to end: `dasrlib.train.loop.train` itself for `--iterations` steps, its it/s read from
  ``metrics.csv`` (the rows after the first, so start-up is excluded); `e2e_over_step` is that
  rate over the step-only rate of the same network.

    python benchmarks/train_loop.py --data-root ../shared/data/train     # batch 16, LR 32

(``../shared/data/train``: an optional external data folder of HR training photos; any folder of
images works, and without ``--data-root`` the embedded photos are used.) At the scale of the
Fig. 4 ablations (notebooks/params/ablations_cpu.yaml; the same optional data folder):

    python benchmarks/train_loop.py --data-root ../shared/data/train --num-feat 32 --num-block 4 \
        --predictor-feat 32 --out results/benchmarks/train_loop_cpu_ablation_scale.json
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import RESULTS_DIR, environment, summarize, write_json  # noqa: E402
from train_step import FixedBatches, bench_config, make_trainer, time_steps  # noqa: E402

from dasrlib.degradation.pipeline import degrade  # noqa: E402
from dasrlib.device import describe_precision, resolve_device  # noqa: E402
from dasrlib.train.loop import train  # noqa: E402


def time_synthesis(trainer, *, repeats: int) -> dict[str, float]:
    """Milliseconds per batch: `degrade` per level on sampled patches, and the training mix."""
    stream = trainer.data
    out = {}
    generator = torch.Generator().manual_seed(0)
    for level in ("weak", "standard", "severe"):
        times = []
        for _ in range(repeats):
            hr = stream.sampler.sample(trainer.local_batch)
            start = time.perf_counter()
            degrade(hr, level, generator=generator)
            times.append((time.perf_counter() - start) * 1000.0)
        out[f"degrade_{level}_ms"] = statistics.median(times)
    stream.batch(0)  # fills the queue
    times = []
    for i in range(1, repeats + 1):
        start = time.perf_counter()
        stream.batch(i)
        times.append((time.perf_counter() - start) * 1000.0)
    out["training_mix_batch_ms"] = statistics.median(times)
    return out


def end_to_end(config, *, iterations: int, prefetch: bool) -> float:
    """Median it/s of ``metrics.csv`` rows after the first, for a fresh run of `config`."""
    with tempfile.TemporaryDirectory() as folder:
        run = config.replace(
            name="e2e",
            out_dir=folder,
            iterations=iterations,
            log_every=max(iterations // 6, 1),
            val_every=10 * iterations,
            checkpoint_every=10 * iterations,
            prefetch_data=prefetch,
            resume="never",
        )
        train(run)
        rows = pd.read_csv(Path(folder) / "e2e" / "metrics.csv")
    return float(rows["it_per_s"].iloc[1:].median())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr-size", type=int, default=32, help="LR patch side (HR = 4x)")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--experts", type=int, default=5)
    parser.add_argument("--num-feat", type=int, default=64, help="channels (ablations: 32)")
    parser.add_argument("--num-block", type=int, default=16, help="residual blocks (ablations: 4)")
    parser.add_argument("--predictor-feat", type=int, default=64, help="(ablations: 32)")
    parser.add_argument("--data-root", default=None, help="HR images (default: embedded photos)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=60, help="end-to-end steps per run")
    parser.add_argument("--networks", default="srresnet,dasr")
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
        queue_size=192,
        data_root=args.data_root,
    ).replace(
        predictor_feat=args.predictor_feat,
        perceptual_weight=0.0,
        adversarial_weight=0.0,
        val_images=0,
    )
    print(describe_precision(device, args.precision))
    stages = {"srresnet": "baseline", "dasr": "dasr"}
    networks = args.networks.split(",")
    probe = make_trainer(base.replace(stage="pretrain", prefetch_data=False), device)
    probe.prepare_data()
    synthesis = time_synthesis(probe, repeats=args.repeats)
    batches = [probe.data.batch(i) for i in range(args.repeats + 1, args.repeats + 9)]
    for name, value in synthesis.items():
        print(f"{name}: {value:.1f}")
    trainers = {n: make_trainer(base.replace(stage=stages[n]), device) for n in networks}
    for trainer in trainers.values():
        trainer.data = FixedBatches(batches)
    times = time_steps(trainers, warmup=3, repeats=args.repeats, device=device)
    rows = {}
    for name in networks:
        step = summarize(times[name])
        step_rate = 1000.0 / step["median_ms"]
        row = {"step_ms": step["median_ms"], "step_it_per_s": step_rate}
        row["training_mix_over_step"] = synthesis["training_mix_batch_ms"] / step["median_ms"]
        for level in ("weak", "standard", "severe"):
            row[f"degrade_{level}_over_step"] = synthesis[f"degrade_{level}_ms"] / step["median_ms"]
        for prefetch in (False, True):
            rate = end_to_end(
                base.replace(stage=stages[name]), iterations=args.iterations, prefetch=prefetch
            )
            key = "prefetch" if prefetch else "no_prefetch"
            row[f"e2e_it_per_s_{key}"] = rate
            row[f"e2e_over_step_{key}"] = rate / step_rate
        rows[name] = row
        print(
            f"{name}: step {step_rate:.2f} it/s; data batch / step "
            f"{row['training_mix_over_step']:.2f}; end to end {row['e2e_it_per_s_no_prefetch']:.2f}"
            f" it/s without prefetch ({row['e2e_over_step_no_prefetch']:.2f} x step), "
            f"{row['e2e_it_per_s_prefetch']:.2f} with ({row['e2e_over_step_prefetch']:.2f} x)"
        )
    payload = {
        "benchmark": "train_loop",
        "environment": environment(device),
        "precision": describe_precision(device, args.precision),
        "settings": vars(args) | {"out": None},
        "synthesis_ms": synthesis,
        "networks": rows,
    }
    out = args.out or RESULTS_DIR / f"train_loop_{device.type}.json"
    write_json(out, payload)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
