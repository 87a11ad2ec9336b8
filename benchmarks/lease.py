"""Every GPU-speed figure of DASR in one call, within a time budget it enforces itself.

    python benchmarks/lease.py --device cuda             # one GPU lease: <= 150 s
    python benchmarks/lease.py --device cpu              # the CPU ratio at LR 128x128
    python benchmarks/lease.py --device cpu --quick      # tiny networks: a dry run in seconds

Writes ``results/benchmarks/gpu_<card>.json`` (``<card>``: h100, h200, ... from the device
name) or ``cpu_<host>.json`` (``--out`` overrides), rewritten after every section, with the
device name, versions and commit (``environment``) and these fixed keys:

- ``latency_ratio``: precision mode -> complete DASR path / SRResNet at LR 339x510 (CPU: 128x128)
  for ``fp32``, ``tf32``, ``bf16``, ``fp16`` (autocast) and ``graph`` (fp16 channels-last, the
  whole path captured in one CUDA graph; on a CPU, which has no graphs, float32 channels-last
  eager). ``compile`` (fp16 channels-last torch.compile) is added when time is left.
- ``latency_ms``: the same modes -> {"srresnet": ms, "dasr": ms} (medians).
- ``upscale_ms``: the public `dasrlib.inference.upscale` call end to end (CPU float image in,
  CPU float image out, untiled, precision "auto") and its ``breakdown`` into transfer,
  predictor, mixing, network, tiling and output conversion, each timed alone through the public
  functions; ``ratio_to_network`` = end to end / the fused network alone.
- ``train_ratio``: DASR / SRResNet steps/s of the trainer's own step (`dasrlib.train`: forward,
  Eq. 3 L1 + regression, backward, Adam, EMA), batch 24, LR 64, bf16 on a GPU.
- ``synthesis_ratio``: per degradation level and for the training mix, samples/s of synthesis
  over the samples/s the DASR training step of this run consumes.

Each section has its own budget; a section that would overrun the total records
``"skipped: budget"`` instead. The measurements are the functions of `inference.py`,
`train_step.py` and `degradation.py` beside this script.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import degradation as degradation_bench  # noqa: E402
import inference as inference_bench  # noqa: E402
import torch  # noqa: E402
import train_step as train_bench  # noqa: E402
from common import (  # noqa: E402
    RESULTS_DIR,
    Budget,
    environment,
    error_text,
    summarize,
    sync,
    time_call_ms,
    use_cpu_clock,
    write_json,
)
from torch import Tensor, nn  # noqa: E402

from dasrlib.device import autocast_dtype, resolve_device  # noqa: E402

logger = logging.getLogger("benchmarks.lease")

LATENCY_MODES = {"fp32": "fp32", "tf32": "tf32", "bf16": "bf16", "fp16": "fp16"}
"""Fixed key -> mode of `inference.MODES`; ``graph`` is added per device (`_graph_mode`)."""
UPSCALE_STAGES = ("transfer", "predictor", "mixing", "network", "tiling", "output_conversion")
SYNTHESIS_KEYS = ("bicubic", "weak", "standard", "severe", "training_pairs")
FIXED_KEYS = ("latency_ratio", "latency_ms", "upscale_ms", "train_ratio", "synthesis_ratio")
TARGETS = {
    "latency_ratio_max": 1.10,
    "fastest_dasr_ms_h100": 4.5,
    "train_ratio_min": 0.85,
    "synthesis_ratio_min": 3.0,
    "upscale_over_network_max": 1.5,
    "cpu_latency_ratio_max_128": 1.15,
}
SKIPPED = "skipped: budget"
NOT_RUN = "not run: not in --sections"
# Seconds each section may take on a GPU (their sum stays under the 150 s default budget with
# room for start-up); the compiled mode runs last, only with COMPILE_MIN_S left.
SECTION_S = {"latency": 40.0, "upscale": 15.0, "train": 45.0, "synthesis": 20.0}
COMPILE_MIN_S = 25.0
SECTIONS = ("latency", "upscale", "train", "synthesis", "compile")


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


def settings(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Network, image, batch and repeat settings: the issue's on a GPU, small on a CPU, tiny
    with ``--quick``."""
    if args.quick:
        return {
            "num_feat": 8,
            "num_block": 2,
            "predictor_feat": 8,
            "size": (24, 32),
            "warmup": 1,
            "repeats": 3,
            "train_batch": 2,
            "train_lr": 8,
            "train_warmup": 1,
            "train_repeats": 2,
            "synth_batch": 2,
            "synth_hr": 64,
            "synth_batches": 1,
            "synth_queue": 4,
        }
    gpu = device.type == "cuda"
    return {
        "num_feat": 64,
        "num_block": 16,
        "predictor_feat": 64,
        "size": (339, 510) if gpu else (128, 128),
        "warmup": 3 if gpu else 1,
        "repeats": 20 if gpu else 5,
        "train_batch": 24 if gpu else 4,
        "train_lr": 64 if gpu else 16,
        "train_warmup": 5 if gpu else 1,
        "train_repeats": 20 if gpu else 3,
        "synth_batch": 24,
        "synth_hr": 256,
        "synth_batches": 5 if gpu else 2,
        "synth_queue": 192 if gpu else 48,
    }


def _graph_mode(device: torch.device) -> str:
    return "fp16_cl_graph" if device.type == "cuda" else "fp32_cl"


def _inference_args(
    conf: dict[str, Any], device: torch.device, variants: tuple[str, ...] = ("dasr",)
) -> argparse.Namespace:
    height, width = conf["size"]
    return inference_bench.parse_args(
        [
            "--device",
            str(device),
            "--size",
            f"{height}x{width}",
            "--variants",
            ",".join(variants),
            "--repeats",
            str(conf["repeats"]),
            "--warmup",
            str(conf["warmup"]),
            "--num-feat",
            str(conf["num_feat"]),
            "--num-block",
            str(conf["num_block"]),
            "--predictor-feat",
            str(conf["predictor_feat"]),
            "--compile-mode",
            conf["compile_mode"],
        ]
    )


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


def latency_section(
    report: dict[str, Any],
    conf: dict[str, Any],
    device: torch.device,
    deadline: float,
    modes: dict[str, str],
    variants: tuple[str, ...] = ("dasr", "dasr_front"),
) -> None:
    """``latency_ratio`` / ``latency_ms`` per fixed mode key (`inference.run_mode`)."""
    args = _inference_args(conf, device, variants)
    model, srresnet = inference_bench.build_models(args, device)
    generator = torch.Generator().manual_seed(args.seed + 1)
    height, width = conf["size"]
    inputs = {
        "timing": torch.rand(1, 3, height, width, generator=generator).to(device),
        "check": torch.rand(1, 3, height, width, generator=generator).to(device),
    }
    references = inference_bench.reference_outputs(model, srresnet, inputs["check"])
    details = report.setdefault("latency", {"input": {"height": height, "width": width}})
    details.setdefault("modes", {})
    for key, mode_name in modes.items():
        if time.perf_counter() >= deadline:
            details["modes"][key] = {"mode": mode_name, "skipped": SKIPPED}
            continue
        mode = inference_bench.MODES[mode_name]
        try:
            record = inference_bench.run_mode(mode, model, srresnet, inputs, references, args)
        except Exception as error:
            record = {"error": error_text(error)}
        record["mode_name"] = mode_name
        details["modes"][key] = record
        records = record.get("variants", {})
        dasr, base = records.get("dasr", {}), records.get("srresnet", {})
        if "median_ms" in dasr and "median_ms" in base:
            report["latency_ratio"][key] = dasr["median_ms"] / base["median_ms"]
            report["latency_ms"][key] = {"srresnet": base["median_ms"], "dasr": dasr["median_ms"]}
            if "median_ms" in records.get("dasr_front", {}):
                report["latency_ms"][key]["dasr_front"] = records["dasr_front"]["median_ms"]
        inference_bench._release(device)


class NearestSR(nn.Module):
    """A plain SR network that costs almost nothing (nearest-neighbour upsampling): `upscale`
    with it times the tiling and output conversion around a network."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return torch.nn.functional.interpolate(x, scale_factor=self.scale, mode="nearest")


def _median_ms(
    fn: Callable[[], object], device: torch.device, *, warmup: int, repeats: int
) -> float:
    """Median ms of ``fn``: on a GPU the host clock around a synchronised call (`upscale`
    returns host tensors, so its own end is a sync); on a CPU `time_call_ms`'s clock."""
    for _ in range(warmup):
        fn()
    sync(device)
    runs = []
    for _ in range(repeats):
        if device.type != "cuda":
            runs.append(time_call_ms(fn, device))
            continue
        sync(device)
        begin = time.perf_counter()
        fn()
        sync(device)
        runs.append((time.perf_counter() - begin) * 1000.0)
    return statistics.median(runs)


def upscale_section(report: dict[str, Any], conf: dict[str, Any], device: torch.device) -> None:
    """``upscale_ms``: `upscale` end to end and each of its stages timed alone."""
    from dasrlib.inference import plan_upscale, predict_vector, upscale

    args = _inference_args(conf, device)
    model, _ = inference_bench.build_models(args, device)
    height, width = conf["size"]
    lr = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(7))
    lr_device = lr.to(device)
    precision = "auto"
    amp = autocast_dtype(device, precision)
    scale = int(model.scale)
    repeats = max(3, conf["repeats"] // 2)
    timing = {"warmup": conf["warmup"], "repeats": repeats}
    v = predict_vector(lr_device, model, precision=precision)
    plan = plan_upscale(lr_device, model, v=v, precision=precision)
    sr_device = torch.rand(3, scale * height, scale * width, device=device)

    def network() -> Tensor:
        with torch.no_grad(), torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            return plan.network(lr_device).float()

    nearest = NearestSR(scale)
    parts = {
        "transfer": lambda: lr.to(device),
        "predictor": lambda: predict_vector(lr_device, model, precision=precision),
        "mixing": lambda: plan_upscale(lr_device, model, v=v, precision=precision),
        "network": network,
        "output_conversion": lambda: sr_device.clamp(0.0, 1.0).cpu(),
        "nearest_network": lambda: nearest(lr_device),
        "nearest_upscale": lambda: upscale(lr_device, nearest, precision=precision, device=device),
    }
    measured = {name: _median_ms(fn, device, **timing) for name, fn in parts.items()}
    total = _median_ms(lambda: upscale(lr, model, precision=precision), device, **timing)
    tiling = (
        measured["nearest_upscale"] - measured["nearest_network"] - measured["output_conversion"]
    )
    breakdown = {name: measured[name] for name in UPSCALE_STAGES if name != "tiling"}
    breakdown["tiling"] = max(tiling, 0.0)
    report["upscale_ms"] = {
        "end_to_end": total,
        "breakdown": {name: breakdown[name] for name in UPSCALE_STAGES},
        "sum_of_stages": sum(breakdown.values()),
        "ratio_to_network": total / measured["network"],
        # The complete DASR path (P + A + mixing + expert, `FastDASR`) in the same precision,
        # from the latency section: upscale's overhead over the best the network path does.
        "ratio_to_dasr_path": _ratio_to_path(report, total, amp),
        "precision": precision,
        "autocast": None if amp is None else str(amp),
        "input": {"height": height, "width": width, "tile": None, "output_dtype": "float32"},
        "method": (
            "medians of each public call alone: transfer = lr.to(device); predictor = "
            "predict_vector on the device image; mixing = plan_upscale with v given (A + fuse); "
            "network = the fused network under the precision's autocast; output_conversion = "
            "clamp + copy of an output-sized device tensor to the host; tiling = upscale of a "
            "nearest-neighbour network minus that network and the output conversion"
        ),
        "probes_ms": {k: measured[k] for k in ("nearest_network", "nearest_upscale")},
    }
    report["upscale_profile"] = _profile(lambda: upscale(lr, model, precision=precision), device)


def _ratio_to_path(report: dict[str, Any], total: float, amp: torch.dtype | None) -> float | None:
    key = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp)
    path = report["latency_ms"].get(key, {}).get("dasr")
    return None if path is None else total / path


def _profile(fn: Callable[[], object], device: torch.device) -> list[str] | dict[str, str]:
    """torch.profiler table (top 15 ops by self device time on a GPU, CPU time on a CPU)."""
    try:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        with profile(activities=activities) as prof:
            fn()
            sync(device)
        return inference_bench._profile_table(prof, device)
    except Exception as error:
        return {"error": error_text(error)}


def train_section(report: dict[str, Any], conf: dict[str, Any], device: torch.device) -> None:
    """``train_ratio``: the trainer's own step, DASR vs SRResNet, interleaved (`train_step`)."""
    base = train_bench.bench_config(
        batch=conf["train_batch"],
        lr_size=conf["train_lr"],
        num_feat=conf["num_feat"],
        num_block=conf["num_block"],
        experts=5,
        precision="auto",
        queue_size=max(4, 2 * conf["train_batch"]),
    )
    batches, _ = train_bench.synthesise(base, device, 4)
    l1 = {"perceptual_weight": 0.0, "adversarial_weight": 0.0}
    trainers = {
        "srresnet": train_bench.make_trainer(base.replace(stage="baseline", **l1), device),
        "dasr": train_bench.make_trainer(base.replace(stage="dasr", **l1), device),
    }
    for trainer in trainers.values():
        trainer.data = train_bench.FixedBatches(batches)
    times = train_bench.time_steps(
        trainers, warmup=conf["train_warmup"], repeats=conf["train_repeats"], device=device
    )
    rates = {name: 1000.0 / summarize(runs)["median_ms"] for name, runs in times.items()}
    report["train_ratio"] = rates["dasr"] / rates["srresnet"]
    dasr = trainers["dasr"]
    report["train"] = {
        "it_per_s": rates,
        "ms": {name: summarize(runs) for name, runs in times.items()},
        "batch": conf["train_batch"],
        "lr_size": conf["train_lr"],
        "precision": str(dasr.amp_dtype or "fp32"),
        "channels_last": dasr.channels_last,
        "per_sample_impl": dasr.config.model.per_sample_impl,
        "objective": "l1 (pixel; DASR adds the degradation regression)",
    }


def synthesis_section(report: dict[str, Any], conf: dict[str, Any], device: torch.device) -> None:
    """``synthesis_ratio``: synthesis samples/s per level and mix over what training consumes."""
    train = report.get("train", {})
    dasr_its = train.get("it_per_s", {}).get("dasr")
    if dasr_its is not None and train.get("batch") == conf["synth_batch"]:
        consumed, source = dasr_its * conf["synth_batch"], "this run's DASR training step"
    else:  # no matching training measurement: the reference 41 it/s of one H100
        consumed, source = 41.0 * conf["synth_batch"], "H100 reference: 41 it/s x batch"
    rows = degradation_bench.synthesis_rates(
        device,
        batch=conf["synth_batch"],
        hr_size=conf["synth_hr"],
        batches=conf["synth_batches"],
        warmup=1,
        queue_size=conf["synth_queue"],
        seed=0,
        consumed=consumed,
    )
    report["synthesis_ratio"] = {key: rows[key]["ratio_to_training"] for key in SYNTHESIS_KEYS}
    report["synthesis_profile"] = severe_profile(conf, device)
    report["synthesis"] = {
        "rows": rows,
        "consumed_samples_per_s": consumed,
        "consumed_from": source,
        "batch": conf["synth_batch"],
        "hr_size": conf["synth_hr"],
    }


def severe_profile(conf: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """One severe batch under torch.profiler: top-level aten ops (the host's dispatch work),
    device kernels launched, and the top ops by device (GPU) or CPU time."""
    from dasrlib.degradation.levels import Level
    from dasrlib.degradation.pipeline import degrade

    try:
        from torch.profiler import ProfilerActivity, profile

        generator = torch.Generator(device=device).manual_seed(0)
        hr = torch.rand(
            conf["synth_batch"],
            3,
            conf["synth_hr"],
            conf["synth_hr"],
            generator=generator,
            device=device,
        )
        degrade(hr, Level.SEVERE, generator=generator)
        sync(device)
        activities = [ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        with profile(activities=activities) as prof:
            degrade(hr, Level.SEVERE, generator=generator)
            sync(device)
        events = list(prof.events())
        top_level = [
            e
            for e in events
            if e.name.startswith("aten::")
            and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))
        ]
        kernels = [e for e in events if str(e.device_type).endswith("CUDA")]
        return {
            "aten_ops": len(top_level),
            "device_kernels": len(kernels),
            "table": inference_bench._profile_table(prof, device),
        }
    except Exception as error:
        return {"error": error_text(error)}


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def default_out(device: torch.device) -> Path:
    """``gpu_<card>.json`` (h100, h200, ...) or ``cpu_<host>.json`` under results/benchmarks."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        match = re.search(r"\b([A-Z]+\d+[A-Z]*)\b", name.upper().replace("NVIDIA", ""))
        word = match.group(1).lower() if match else "cuda"
        return RESULTS_DIR / f"gpu_{word}.json"
    host = re.sub(r"[^a-z0-9]+", "-", platform.node().lower()).strip("-") or "cpu"
    return RESULTS_DIR / f"cpu_{host}.json"


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    budget = Budget(args.budget_s)
    conf = {**settings(args, device), "compile_mode": args.compile_mode}
    use_cpu_clock(args.cpu_clock)
    conf["cpu_clock"] = args.cpu_clock
    out = args.out or default_out(device)
    modes = {**LATENCY_MODES, "graph": _graph_mode(device)}
    if args.modes is not None:
        modes = {key: modes[key] for key in args.modes}
    report: dict[str, Any] = {
        "benchmark": "GPU speed: DASR vs SRResNet latency, upscale, training, synthesis",
        "environment": environment(device),
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in conf.items()},
        "latency_modes": modes,
        "budget_s": args.budget_s,
        "targets": TARGETS,
        "latency_ratio": {},
        "latency_ms": {},
        "upscale_ms": SKIPPED if "upscale" in args.sections else NOT_RUN,
        "train_ratio": SKIPPED if "train" in args.sections else NOT_RUN,
        "synthesis_ratio": SKIPPED if "synthesis" in args.sections else NOT_RUN,
        "sections": {},
    }
    scale = 1.0 if device.type == "cuda" else args.budget_s / 150.0
    caps = {name: seconds * scale for name, seconds in SECTION_S.items()}
    sections: list[tuple[str, Callable[[], None]]] = [
        (
            "latency",
            lambda: latency_section(
                report, conf, device, time.perf_counter() + caps["latency"], modes
            ),
        ),
        ("upscale", lambda: upscale_section(report, conf, device)),
        ("train", lambda: train_section(report, conf, device)),
        ("synthesis", lambda: synthesis_section(report, conf, device)),
    ]
    sections = [(name, fn) for name, fn in sections if name in args.sections]
    for index, (name, section) in enumerate(sections):
        # Start a section only if the sections still to come keep a third of their caps.
        later = sum(caps[n] for n, _ in sections[index + 1 :]) / 3.0
        if budget.remaining() - later < caps[name] / 3.0:
            report["sections"][name] = {"status": SKIPPED, "left_s": round(budget.remaining(), 1)}
            logger.warning("%s: %s (%.0f s left)", name, SKIPPED, budget.remaining())
            continue
        _run_section(report, name, section, budget)
        summarise(report)
        write_json(out, report)
    if args.compile_child:  # the child process of `compile_section`: compile here
        deadline = time.perf_counter() + budget.remaining()
        compile_modes = {"compile": "fp16_cl_compile"}
        _run_section(
            report,
            "compile",
            lambda: latency_section(report, conf, device, deadline, compile_modes, ("dasr",)),
            budget,
        )
    elif "compile" in args.sections and device.type == "cuda" and not args.quick:
        if budget.remaining() >= COMPILE_MIN_S:
            _run_section(report, "compile", lambda: compile_section(report, args, budget), budget)
        else:
            left = round(budget.remaining(), 1)
            report["sections"]["compile"] = {"status": SKIPPED, "left_s": left}
    summarise(report)
    report["elapsed_s"] = round(budget.elapsed(), 1)
    write_json(out, report)
    report["json_path"] = str(out)
    return report


def compile_section(report: dict[str, Any], args: argparse.Namespace, budget: Budget) -> None:
    """The ``compile`` latency mode in a child process killed when the budget runs out (a
    compilation cannot be interrupted in-process); its numbers are merged into ``report``."""
    import subprocess
    import tempfile

    seconds = budget.remaining() - 3.0
    with tempfile.TemporaryDirectory() as folder:
        child_out = Path(folder) / "compile.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--device", args.device]
        command += ["--sections", "compile", "--compile-child", "--budget-s", f"{seconds:.0f}"]
        command += ["--compile-mode", args.compile_mode, "--out", str(child_out)]
        try:
            done = subprocess.run(
                command, timeout=seconds, check=False, capture_output=True, text=True
            )
        except subprocess.TimeoutExpired:
            report.setdefault("latency", {"modes": {}})["modes"]["compile"] = {
                "skipped": f"{SKIPPED} (killed at {seconds:.0f} s)"
            }
            return
        if not child_out.is_file():
            raise RuntimeError(f"compile child exited {done.returncode}: {done.stderr[-400:]}")
        child = json.loads(child_out.read_text())
    for key in ("latency_ratio", "latency_ms"):
        report[key].update(child[key])
    report.setdefault("latency", {"modes": {}})["modes"].update(child["latency"]["modes"])


def _run_section(
    report: dict[str, Any], name: str, section: Callable[[], None], budget: Budget
) -> None:
    begin = budget.elapsed()
    logger.info("%s (%.0f s elapsed)", name, begin)
    try:
        section()
        status = "ok"
    except Exception as error:  # recorded; the other sections still run
        status = f"error: {error_text(error)}"
        logger.warning("%s failed: %s", name, status)
    report["sections"][name] = {"status": status, "seconds": round(budget.elapsed() - begin, 1)}


def summarise(report: dict[str, Any]) -> None:
    """The fastest complete DASR path and which targets the numbers meet."""
    ratios = report["latency_ratio"]
    fastest = min(
        ((ms["dasr"], key) for key, ms in report["latency_ms"].items()), default=(None, None)
    )
    report["fastest_dasr_ms"] = {"ms": fastest[0], "mode": fastest[1]}
    upscale = report["upscale_ms"]
    synthesis = report["synthesis_ratio"]
    report["meets"] = {
        "latency_ratio": all(r <= TARGETS["latency_ratio_max"] for r in ratios.values())
        if ratios
        else None,
        "train_ratio": report["train_ratio"] >= TARGETS["train_ratio_min"]
        if isinstance(report["train_ratio"], float)
        else None,
        "synthesis_ratio": min(synthesis.values()) >= TARGETS["synthesis_ratio_min"]
        if isinstance(synthesis, dict)
        else None,
        "upscale_over_network": upscale["ratio_to_network"] <= TARGETS["upscale_over_network_max"]
        if isinstance(upscale, dict)
        else None,
    }


def print_summary(report: dict[str, Any]) -> None:
    env = report["environment"]
    print(f"{env.get('device_name')} torch {env.get('torch')} commit {env.get('git_commit')}")
    for key, ratio in report["latency_ratio"].items():
        ms = report["latency_ms"][key]
        print(
            f"  latency {key:8s} ratio {ratio:.3f}  srresnet {ms['srresnet']:.2f} ms  "
            f"dasr {ms['dasr']:.2f} ms"
        )
    upscale = report["upscale_ms"]
    if isinstance(upscale, dict):
        parts = ", ".join(f"{k} {v:.1f}" for k, v in upscale["breakdown"].items())
        print(
            f"  upscale {upscale['end_to_end']:.1f} ms (x{upscale['ratio_to_network']:.2f} "
            f"the network): {parts}"
        )
    print(f"  train_ratio {report['train_ratio']}")
    print(f"  synthesis_ratio {report['synthesis_ratio']}")
    print(f"  sections {report['sections']}")
    print(f"  meets {report['meets']}; {report['elapsed_s']} s")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    parser.add_argument("--quick", action="store_true", help="tiny networks and sizes (tests)")
    parser.add_argument(
        "--budget-s", type=float, default=None, help="total seconds (GPU 150, CPU 1500)"
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON path")
    parser.add_argument(
        "--sections",
        type=lambda text: tuple(text.split(",")),
        default=SECTIONS,
        help=f"comma list of {','.join(SECTIONS)} (default all; the fixed keys of the others "
        "stay 'skipped')",
    )
    parser.add_argument(
        "--compile-mode",
        default="default",
        help="torch.compile mode of the compiled latency mode (max-autotune compiles for "
        "minutes: more than a lease's budget)",
    )
    parser.add_argument("--compile-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--cpu-clock",
        choices=("wall", "process"),
        default="wall",
        help="CPU latency clock (process: CPU time, robust to other load; use one thread)",
    )
    parser.add_argument(
        "--modes",
        type=lambda text: tuple(text.split(",")),
        default=None,
        help="latency keys to time (default fp32,tf32,bf16,fp16,graph)",
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.sections if name not in SECTIONS]
    unknown += [key for key in args.modes or () if key not in (*LATENCY_MODES, "graph")]
    if unknown:
        parser.error(f"unknown sections or modes {unknown}")
    if args.budget_s is None:
        args.budget_s = 150.0 if resolve_device(args.device).type == "cuda" else 1500.0
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    report = run(parse_args(argv))
    print_summary(report)
    print(f"wrote {report['json_path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
