"""Inference latency of DASR's complete path against a plain SRResNet, side by side.

    python benchmarks/inference.py --device cuda            # 339x510 LR, every precision mode
    python benchmarks/inference.py --device cpu --size 128  # the 2-core CPU ratio (+ bf16)
    python benchmarks/inference.py --device cuda --large    # 2000x2000 LR through upscale, tiled

One run, one device. For each mode (fp32, tf32, bf16 / fp16 autocast, bf16 / fp16 converted,
channels-last, CUDA-graph replay, optionally torch.compile) it times, interleaved round by round:

- ``srresnet``: the plain expert network (BasicSR MSRResNet, same topology as a DASR expert);
- ``dasr``: the complete DASR path, `dasrlib.accel.FastDASR`: predictor P on the LR, weighting A,
  the mixing matmul (Eq. 2) and the expert network reading the mixed weights;
- ``dasr_library``: `dasrlib.models.dasr.DASRInference` (the model's own shared-weights path);
- ``dasr_naive``: the per-sample training path with B = 1 (mix per call, one grouped conv per
  layer), the "naive DASR" of the H100 reference timings (`H100_REFERENCE_MS`).

Median warm latency (CUDA events / perf_counter), peak GPU memory of each variant, and the
relative L2 error of each variant against its float32 reference on a fresh random input (fp32
< 1e-5, tf32 < 1e-3, bf16/fp16 < 1e-2; NaN fails). ``latency_ratio`` maps each mode to
dasr / srresnet (ratio of medians); ``latency_ratio_paired`` is the median of round-by-round
ratios. A variant that fails records its error text and the run goes on. The JSON is rewritten
after every mode, so a run stopped by a time limit keeps what it measured.

Weights are random (seeded): latency does not depend on their values. The correctness errors
are also given relative to the residual (output minus the bilinear skip of the input), which the
random 0.1-scaled experts keep small.
"""

from __future__ import annotations

import argparse
import copy
import gc
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from common import (
    ERROR_BOUNDS,
    RESULTS_DIR,
    Budget,
    Mode,
    RSSSampler,
    current_rss_bytes,
    device_kind,
    environment,
    error_text,
    mode_context,
    paired_ratio,
    relative_l2,
    summarize,
    sync,
    time_interleaved,
    write_json,
)
from torch import Tensor

from dasrlib.accel import FastDASR, GraphedSR, PreparedNetwork, compile_for_shape
from dasrlib.device import cpu_has_bf16, resolve_device
from dasrlib.models.dasr import DASR, DASRInference
from dasrlib.models.experts import SRResNet
from dasrlib.models.mixed import MixedWeights, channels_last_flat

logger = logging.getLogger("benchmarks.inference")

MODES: dict[str, Mode] = {
    mode.name: mode
    for mode in (
        Mode("fp32", "fp32"),
        Mode("tf32", "tf32", tf32=True),
        Mode("bf16", "bf16", autocast=torch.bfloat16),
        Mode("fp16", "fp16", autocast=torch.float16),
        Mode("fp32_cl", "fp32", channels_last=True),
        Mode("tf32_cl", "tf32", tf32=True, channels_last=True),
        Mode("bf16_native", "bf16", dtype="bf16"),
        Mode("fp16_native", "fp16", dtype="fp16"),
        Mode("bf16_cl", "bf16", dtype="bf16", channels_last=True),
        Mode("fp16_cl", "fp16", dtype="fp16", channels_last=True),
        Mode("bf16_cl_graph", "bf16", dtype="bf16", channels_last=True, runner="cudagraph"),
        Mode("fp16_cl_graph", "fp16", dtype="fp16", channels_last=True, runner="cudagraph"),
        Mode("tf32_cl_graph", "tf32", tf32=True, channels_last=True, runner="cudagraph"),
        Mode("fp16_cl_compile", "fp16", dtype="fp16", channels_last=True, runner="compile"),
    )
}
GPU_MODES = (  # in order of importance: a run out of budget skips the last ones
    "fp32",
    "tf32",
    "bf16",
    "fp16",
    "fp16_cl",
    "fp16_cl_graph",
    "bf16_cl",
    "bf16_cl_graph",
    "tf32_cl_graph",
    "tf32_cl",
    "fp16_native",
    "bf16_native",
)
CPU_MODES = ("fp32_cl", "fp32")
CPU_BF16_MODES = ("bf16_cl", "bf16")  # also timed on a CPU with bf16 units (cpu_has_bf16)
H100_REFERENCE_MS = {  # reference timings (one H100, 339x510): orientation only
    "srresnet": {"fp32": 31.9, "tf32": 15.9, "bf16": 10.4, "fp16_cl_compile": 3.7},
    "dasr_naive": {"fp32": 37.7, "tf32": 18.5, "bf16": 16.9},
}
TARGETS = {"latency_ratio_max": 1.10, "fastest_dasr_ms_h100": 4.5, "cpu_ratio_max_128": 1.15}


# --------------------------------------------------------------------------------------------
# Models and variants
# --------------------------------------------------------------------------------------------


def build_models(args: argparse.Namespace, device: torch.device) -> tuple[DASR, SRResNet]:
    """A seeded random DASR and a plain SRResNet of the same topology, in eval mode."""
    generator = torch.Generator().manual_seed(args.seed)
    options = {"num_feat": args.num_feat, "num_block": args.num_block}
    model = DASR(**options, predictor_feat=args.predictor_feat, generator=generator)
    model = model.to(device).eval()
    srresnet = SRResNet(**options, generator=generator).to(device).eval()
    return model, srresnet


def naive_dasr(model: DASR) -> Callable[[Tensor], Tensor]:
    """P + A + mixing per call, then the per-sample grouped-convolution path with B = 1."""

    def run(lr: Tensor) -> Tensor:
        a = model.expert_weights(model.predict_degradation(lr))
        flat = model.experts.mix(a)  # [1, P]: the per-sample path
        return model.network(lr, MixedWeights(flat=flat, impl="grouped"))

    return run


def dasr_front(model: DASR, mode: Mode) -> Callable[[Tensor], Tensor]:
    """P + A + the mixing matmul alone (flat [P]): DASR's overhead over one expert."""
    fast = FastDASR(model, dtype=mode.dtype, channels_last=mode.channels_last)
    memory_format = torch.channels_last if mode.channels_last else torch.contiguous_format

    def run(lr: Tensor) -> Tensor:
        return fast.adapt(lr.to(dtype=fast.dtype, memory_format=memory_format))

    return run


def make_variants(
    mode: Mode, model: DASR, srresnet: SRResNet, example: Tensor, args: argparse.Namespace
) -> tuple[dict[str, Callable[[Tensor], Tensor]], dict[str, dict[str, Any]]]:
    """The callables timed in ``mode`` (float32 NCHW in, float32 out) and per-variant records
    (memory of building them, or the error that stopped one)."""
    device = example.device
    variants: dict[str, Callable[[Tensor], Tensor]] = {}
    records: dict[str, dict[str, Any]] = {}
    converts = mode.dtype != "fp32" or mode.channels_last or mode.runner != "eager"
    builders: dict[str, Callable[[], Callable[[Tensor], Tensor]]] = {
        "srresnet": lambda: PreparedNetwork(
            srresnet, dtype=mode.dtype, channels_last=mode.channels_last
        ),
        "dasr": lambda: FastDASR(model, dtype=mode.dtype, channels_last=mode.channels_last),
    }
    builders["dasr_front"] = lambda: dasr_front(model, mode)
    if mode.dtype == "fp32" and mode.autocast is None and device.type == "cuda":
        builders["dasr_pred_bf16"] = lambda: FastDASR(
            model,
            dtype=mode.dtype,
            channels_last=mode.channels_last,
            predictor_dtype=torch.bfloat16,
        )
    if not converts:
        builders["dasr_library"] = lambda: DASRInference(model)
        builders["dasr_naive"] = lambda: naive_dasr(model)
    if args.variants is not None:
        builders = {k: v for k, v in builders.items() if k in args.variants or k == "srresnet"}
    for name, build in builders.items():
        record: dict[str, Any] = {}
        records[name] = record
        before = _allocated(device)
        try:
            fn = build()
            if mode.runner == "cudagraph":
                if device.type != "cuda":
                    raise RuntimeError("CUDA graphs need a CUDA device")
                fn = GraphedSR(fn, example)
            elif mode.runner == "compile":
                fn = compile_for_shape(fn, example, mode="compile", compile_mode=args.compile_mode)
            variants[name] = fn
        except Exception as error:  # recorded in the JSON; the other variants still run
            record["error"] = error_text(error)
            logger.warning("%s / %s failed to build: %s", mode.name, name, record["error"])
        record["build_mem_mb"] = _mb(_allocated(device) - before)
    return variants, records


def _allocated(device: torch.device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else 0


def _mb(count: float) -> float:
    return round(count / 2**20, 2)


# --------------------------------------------------------------------------------------------
# One mode
# --------------------------------------------------------------------------------------------


def run_mode(
    mode: Mode,
    model: DASR,
    srresnet: SRResNet,
    inputs: dict[str, Tensor],
    references: dict[str, Tensor],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Build, check and time every variant of ``mode``; one JSON-able record."""
    example, check = inputs["timing"], inputs["check"]
    device = example.device
    result: dict[str, Any] = {"mode": mode.describe(), "variants": {}}
    with mode_context(mode, device):
        variants, records = make_variants(mode, model, srresnet, example, args)
        result["variants"] = records
        working: dict[str, Callable[[], object]] = {}
        for name, fn in variants.items():
            record = records[name]
            try:
                record.update(_check(fn, name, check, references, mode))
                record.update(_peak_memory(fn, example, device))
                working[name] = _bind(fn, example)
            except Exception as error:
                record["error"] = error_text(error)
                logger.warning("%s / %s failed: %s", mode.name, name, record["error"])
        if not working:
            return result
        try:
            times = time_interleaved(
                working, device=device, warmup=args.warmup, repeats=args.repeats
            )
        except Exception as error:
            result["error"] = error_text(error)
            return result
    for name, runs in times.items():
        records[name].update(summarize(runs))
        records[name]["runs_ms"] = [round(t, 4) for t in runs]
    if "srresnet" in times:
        base = times["srresnet"]
        for name in times:
            if name != "srresnet":
                records[name]["ratio_to_srresnet"] = _ratio(times[name], base)
                records[name]["ratio_to_srresnet_paired"] = paired_ratio(times[name], base)
                rounds = [t / b for t, b in zip(times[name], base, strict=True)]
                spread = summarize(rounds)
                records[name]["ratio_rounds"] = {
                    key.removesuffix("_ms"): value for key, value in spread.items()
                }
    return result


def _bind(fn: Callable[[Tensor], Tensor], x: Tensor) -> Callable[[], object]:
    return lambda: fn(x)


def _ratio(numerator: list[float], denominator: list[float]) -> float:
    return summarize(numerator)["median_ms"] / summarize(denominator)["median_ms"]


def _check(
    fn: Callable[[Tensor], Tensor],
    name: str,
    check: Tensor,
    references: dict[str, Tensor],
    mode: Mode,
) -> dict[str, Any]:
    """Relative L2 error against the float32 reference on a fresh input; NaN fails.

    SR outputs are compared with the reference SR (and, as ``rel_l2_error_residual``, their
    difference from the bilinear skip with the reference's); ``dasr_front`` compares the mixed
    parameters. ``dasr_pred_bf16`` is held to the bf16 bound (its predictor runs in bf16).
    """
    out = fn(check).float()
    if name == "dasr_front":
        reference = references["flat_cl" if mode.channels_last else "flat"]
    else:
        reference = references["srresnet" if name == "srresnet" else "dasr"]
    if out.shape != reference.shape:
        raise ValueError(f"output shape {tuple(out.shape)}, reference {tuple(reference.shape)}")
    error = relative_l2(out, reference)
    record: dict[str, Any] = {"rel_l2_error": error}
    if name != "dasr_front":
        residual = reference - references["bilinear"]
        record["rel_l2_error_residual"] = relative_l2(out - references["bilinear"], residual)
    bound = ERROR_BOUNDS["bf16" if name == "dasr_pred_bf16" else mode.precision]
    record["error_bound"] = bound
    record["correct"] = error == error and error < bound  # NaN != NaN: NaN fails
    return record


def _peak_memory(
    fn: Callable[[Tensor], Tensor], example: Tensor, device: torch.device
) -> dict[str, Any]:
    """Peak allocated GPU memory during one call, absolute and above what was allocated before."""
    if device.type != "cuda":
        return {"peak_mem_mb": None, "peak_extra_mb": None}
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    out = fn(example)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    del out
    return {"peak_mem_mb": _mb(peak), "peak_extra_mb": _mb(peak - before)}


# --------------------------------------------------------------------------------------------
# The whole run
# --------------------------------------------------------------------------------------------


def _parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("x", " ").split()
    if len(parts) == 1:
        return int(parts[0]), int(parts[0])
    if len(parts) == 2:
        return int(parts[0]), int(parts[1])
    raise argparse.ArgumentTypeError(f"--size expects H or HxW, got {text!r}")


def summarize_run(report: dict[str, Any]) -> None:
    """Fill the fixed keys: latency_ratio (mode -> dasr / srresnet), the fastest paths."""
    ratios: dict[str, float] = {}
    paired: dict[str, float] = {}
    spread: dict[str, dict[str, float]] = {}
    minimum: dict[str, float] = {}
    naive: dict[str, float] = {}
    fastest: dict[str, Any] = {}
    for mode_name, mode_result in report["modes"].items():
        records = mode_result.get("variants", {})
        dasr, base = records.get("dasr", {}), records.get("srresnet", {})
        if "median_ms" in dasr and "median_ms" in base:
            ratios[mode_name] = dasr["median_ms"] / base["median_ms"]
            minimum[mode_name] = dasr["min_ms"] / base["min_ms"]
            paired[mode_name] = dasr["ratio_to_srresnet_paired"]
            spread[mode_name] = dasr["ratio_rounds"]
        if "ratio_to_srresnet" in records.get("dasr_naive", {}):
            naive[mode_name] = records["dasr_naive"]["ratio_to_srresnet"]
        for name in ("dasr", "srresnet"):
            record = records.get(name, {})
            if "median_ms" in record and record.get("correct", False):
                best = fastest.get(name)
                if best is None or record["median_ms"] < best["median_ms"]:
                    fastest[name] = {"mode": mode_name, "median_ms": record["median_ms"]}
    report["latency_ratio"] = ratios
    report["latency_ratio_paired"] = paired
    report["latency_ratio_rounds"] = spread
    report["latency_ratio_min"] = minimum  # ratio of the fastest runs: robust to a busy host
    report["naive_latency_ratio"] = naive
    report["fastest"] = fastest
    report["max_latency_ratio"] = max(ratios.values()) if ratios else None
    report["all_correct"] = all(
        record.get("correct", False)
        for mode_result in report["modes"].values()
        for record in mode_result.get("variants", {}).values()
        if "error" not in record
    )


def print_table(report: dict[str, Any]) -> None:
    env = report["environment"]
    size = report["input"]
    print(
        f"device: {env['device_name']} ({env['device']}), torch {env['torch']}, "
        f"cuda {env['cuda']}, LR {size['height']}x{size['width']}, commit {env['git_commit']}"
    )
    header = (
        f"{'mode':>16} {'variant':>13} {'median ms':>10} {'ratio':>6} {'rel err':>9} {'peak MB':>9}"
    )
    print(header)
    for mode_name, mode_result in report["modes"].items():
        if "skipped" in mode_result:
            print(f"{mode_name:>16} skipped: {mode_result['skipped']}")
            continue
        for name, record in mode_result.get("variants", {}).items():
            if "error" in record:
                print(f"{mode_name:>16} {name:>13} ERROR {record['error'][:80]}")
                continue
            if "median_ms" not in record:
                continue
            ratio = record.get("ratio_to_srresnet")
            error = record.get("rel_l2_error")
            peak = record.get("peak_mem_mb")
            flag = "" if record.get("correct", False) else " WRONG"
            print(
                f"{mode_name:>16} {name:>13} {record['median_ms']:10.3f} "
                f"{'' if ratio is None else f'{ratio:6.3f}':>6} "
                f"{'' if error is None else f'{error:9.2e}':>9} "
                f"{'' if peak is None else f'{peak:9.1f}':>9}{flag}"
            )
    print(f"latency_ratio: { {k: round(v, 3) for k, v in report['latency_ratio'].items()} }")
    print(f"fastest: {report['fastest']}; all correct: {report['all_correct']}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = args.cudnn_benchmark != "off"
    height, width = args.size or ((339, 510) if device.type == "cuda" else (128, 128))
    cpu_modes = CPU_MODES + (CPU_BF16_MODES if cpu_has_bf16() else ())
    mode_names = args.modes or (GPU_MODES if device.type == "cuda" else cpu_modes)
    if args.compile and "fp16_cl_compile" not in mode_names:
        mode_names = (*mode_names, "fp16_cl_compile")
    unknown = [name for name in mode_names if name not in MODES]
    if unknown:
        raise SystemExit(f"unknown modes {unknown}; known: {sorted(MODES)}")
    if args.budget_s is None:
        args.budget_s = 90.0 if device.type == "cuda" else 1800.0
    budget = Budget(args.budget_s)
    model, srresnet = build_models(args, device)
    generator = torch.Generator().manual_seed(args.seed + 1)
    inputs = {
        "timing": torch.rand(1, 3, height, width, generator=generator).to(device),
        "check": torch.rand(1, 3, height, width, generator=generator).to(device),
    }
    references = reference_outputs(model, srresnet, inputs["check"])
    out_path = args.out or RESULTS_DIR / f"inference_{device_kind(device)}.json"
    report: dict[str, Any] = {
        "benchmark": "inference latency, DASR complete path vs SRResNet",
        "environment": environment(device),
        "input": {"batch": 1, "height": height, "width": width, "scale": model.scale},
        "network": {
            "num_feat": args.num_feat,
            "num_block": args.num_block,
            "predictor_feat": args.predictor_feat,
            "num_experts": model.num_experts,
        },
        "config": {
            "repeats": args.repeats,
            "warmup": args.warmup,
            "seed": args.seed,
            "budget_s": args.budget_s,
            "compile_mode": args.compile_mode if args.compile else None,
        },
        "gmacs": count_macs(model, srresnet, height, width),
        "targets": TARGETS,
        "h100_reference_ms": H100_REFERENCE_MS,
        "modes": {},
    }
    want_profile = args.profile == "on" or (args.profile == "auto" and device.type == "cuda")
    profile_reserve = 8.0 if want_profile else 0.0
    for name in mode_names:
        mode = MODES[name]
        reserve = args.compile_reserve_s if mode.runner == "compile" else 0.0
        reserve = max(reserve, profile_reserve)
        if budget.remaining() < reserve or budget.remaining() <= 0:
            report["modes"][name] = {
                "mode": mode.describe(),
                "skipped": f"time budget: {budget.remaining():.0f} s left of {args.budget_s:.0f}",
            }
            continue
        if mode.runner == "cudagraph" and device.type != "cuda":
            report["modes"][name] = {"mode": mode.describe(), "skipped": "CUDA graphs need CUDA"}
            continue
        logger.info("mode %s (%.0f s elapsed)", name, budget.elapsed())
        try:
            report["modes"][name] = run_mode(mode, model, srresnet, inputs, references, args)
        except Exception as error:
            report["modes"][name] = {"mode": mode.describe(), "error": error_text(error)}
        report["modes"][name]["elapsed_s"] = round(budget.elapsed(), 1)
        summarize_run(report)
        write_json(out_path, report)
        _release(device)
    summarize_run(report)
    if want_profile and budget.remaining() >= profile_reserve:
        report["profile"] = profile_paths(model, srresnet, inputs["timing"])
    report["elapsed_s"] = round(budget.elapsed(), 1)
    write_json(out_path, report)
    report["json_path"] = str(out_path)
    return report


def profile_paths(model: DASR, srresnet: SRResNet, example: Tensor) -> dict[str, Any]:
    """torch.profiler tables (top kernels) of one call of SRResNet, of DASR's P + A + mixing
    and of the complete DASR path: fp16 channels-last on a GPU, float32 channels-last on a CPU.
    The evidence for where DASR's extra time goes."""
    device = example.device
    dtype = "fp16" if device.type == "cuda" else "fp32"
    mode = Mode("profile", dtype, dtype=dtype, channels_last=True)
    try:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        paths = {
            "srresnet": PreparedNetwork(srresnet, dtype=dtype, channels_last=True),
            "dasr_front": dasr_front(model, mode),
            "dasr": FastDASR(model, dtype=dtype, channels_last=True),
        }
        result: dict[str, Any] = {"dtype": dtype, "channels_last": True}
        with torch.no_grad():
            for name, fn in paths.items():
                for _ in range(2):
                    fn(example)
                sync(device)
                with profile(activities=activities) as prof:
                    fn(example)
                    sync(device)
                result[name] = _profile_table(prof, device)
        return result
    except Exception as error:
        return {"error": error_text(error)}


def _profile_table(prof: Any, device: torch.device) -> list[str]:
    averages = prof.key_averages()
    keys = ("self_device_time_total", "self_cuda_time_total")
    if device.type != "cuda":
        keys = ("self_cpu_time_total",)
    for key in keys:
        try:
            return averages.table(sort_by=key, row_limit=15).splitlines()
        except Exception:  # the sort key's name changed between torch versions
            continue
    return averages.table(row_limit=15).splitlines()


def reference_outputs(model: DASR, srresnet: SRResNet, lr: Tensor) -> dict[str, Tensor]:
    """Float32 references (TF32 off, no autocast): DASRInference and the SRResNet."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad():
            dasr = DASRInference(model)(lr).float()
            base = srresnet(lr).float()
            bilinear = F.interpolate(lr, scale_factor=model.scale, mode="bilinear")
            flat = model.mixed_parameters(model.expert_weights(model.predict_degradation(lr))[0])
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    return {
        "dasr": dasr,
        "srresnet": base,
        "bilinear": bilinear,
        "flat": flat,
        "flat_cl": channels_last_flat(model.experts.layout, flat),
    }


def count_macs(model: DASR, srresnet: SRResNet, height: int, width: int) -> dict[str, Any]:
    """GMACs of one image (torch's FLOP counter on meta copies; nothing is computed)."""
    try:
        from dasrlib.profiling import count_gmacs

        size = (height, width)
        dasr = count_gmacs(copy.deepcopy(model).to("meta"), size=size)
        base = count_gmacs(copy.deepcopy(srresnet).to("meta"), size=size)
        predictor = count_gmacs(copy.deepcopy(model.predictor).to("meta"), size=size)
    except Exception as error:
        return {"error": error_text(error)}
    return {"dasr": dasr, "srresnet": base, "predictor": predictor, "ratio": dasr / base}


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------
# Large image through dasrlib.inference.upscale
# --------------------------------------------------------------------------------------------


def run_large(args: argparse.Namespace) -> dict[str, Any]:
    """A ``large_size``^2 LR image through `upscale` with tiling and a uint8 output."""
    device = resolve_device(args.device)
    if device.type == "cuda":
        # Tiles come in several shapes (border tiles are clipped): autotuning each would cost
        # more than the run, so cuDNN's heuristics pick the algorithms unless asked otherwise.
        torch.backends.cudnn.benchmark = args.cudnn_benchmark == "on"
    model, _ = build_models(args, device)
    side = args.large_size
    generator = torch.Generator().manual_seed(args.seed + 2)
    lr = torch.rand(1, 3, side, side, generator=generator)
    out_path = args.out or RESULTS_DIR / f"inference_large_{device_kind(device)}.json"
    scale = model.scale
    float_output_mb = _mb(3 * (scale * side) ** 2 * 4)
    report: dict[str, Any] = {
        "benchmark": "large image through dasrlib.inference.upscale (tiled, uint8 output)",
        "environment": environment(device),
        "input": {"height": side, "width": side, "scale": scale},
        "tile": args.tile,
        "precision": args.large_precision,
        "float32_full_output_mb": float_output_mb,
        "uint8_full_output_mb": _mb(3 * (scale * side) ** 2),
    }
    try:
        from dasrlib.inference import upscale
        from dasrlib.tiling import DEFAULT_OVERLAP
    except Exception as error:  # an import failure is recorded in the report, then it stops
        report["error"] = f"dasrlib.inference unavailable: {error_text(error)}"
        write_json(out_path, report)
        return report
    report["overlap"] = DEFAULT_OVERLAP
    try:
        # Warm-up on a small image: CUDA context, cuDNN handles and algorithms out of the numbers.
        upscale(lr[..., :64, :64], model, tile=args.tile, precision=args.large_precision)
        _release(device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before_gpu = torch.cuda.memory_allocated(device)
        rss_before = current_rss_bytes()
        with RSSSampler() as sampler:
            begin = time.perf_counter()
            out = upscale(
                lr,
                model,
                tile=args.tile,
                precision=args.large_precision,
                output_dtype=torch.uint8,
            )
            seconds = time.perf_counter() - begin
        assert isinstance(out, Tensor)
        report["seconds"] = round(seconds, 3)
        report["output"] = {"shape": list(out.shape), "dtype": str(out.dtype)}
        report["output_is_uint8"] = out.dtype == torch.uint8
        report["output_device"] = str(out.device)
        if device.type == "cuda":
            report["peak_gpu_mem_mb"] = _mb(torch.cuda.max_memory_allocated(device))
            report["peak_gpu_extra_mb"] = _mb(torch.cuda.max_memory_allocated(device) - before_gpu)
            report["peak_gpu_reserved_mb"] = _mb(torch.cuda.max_memory_reserved(device))
        if rss_before is not None:
            extra = sampler.peak_bytes - rss_before
            report["host_rss_before_mb"] = _mb(rss_before)
            report["host_rss_peak_mb"] = _mb(sampler.peak_bytes)
            report["host_rss_extra_mb"] = _mb(extra)
        # With the network on a GPU the host holds the input, the uint8 output and small
        # transfers: a float32 copy of the whole output would push the host's extra RSS past
        # float32_full_output_mb. (On a CPU the tile activations live in host memory too, so
        # the RSS says nothing about the output copies: None.)
        no_float_copy = None
        if device.type == "cuda" and rss_before is not None:
            no_float_copy = bool(extra < float_output_mb * 2**20)
        report["no_float32_full_output"] = no_float_copy
        report["ok"] = bool(report["output_is_uint8"] and no_float_copy is not False)
    except Exception as error:
        report["error"] = error_text(error)
        report["ok"] = False
    write_json(out_path, report)
    report["json_path"] = str(out_path)
    return report


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    parser.add_argument(
        "--size", type=_parse_size, default=None, help="LR H or HxW (GPU 339x510, CPU 128)"
    )
    parser.add_argument("--modes", type=lambda t: tuple(t.split(",")), default=None)
    parser.add_argument(
        "--variants",
        type=lambda t: tuple(t.split(",")),
        default=None,
        help="only these variants (comma list; srresnet always runs)",
    )
    parser.add_argument("--repeats", type=int, default=20, help="timed rounds (median)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per variant")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-feat", type=int, default=64)
    parser.add_argument("--num-block", type=int, default=16)
    parser.add_argument("--predictor-feat", type=int, default=64)
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="skip the remaining modes after this many seconds (default: GPU 90, CPU 1800)",
    )
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--compile-mode", default="max-autotune-no-cudagraphs")
    parser.add_argument(
        "--compile-reserve-s",
        type=float,
        default=45.0,
        help="start compiling only with this much budget left",
    )
    parser.add_argument(
        "--cudnn-benchmark",
        choices=("auto", "on", "off"),
        default="auto",
        help="cuDNN autotuning; auto: on for the latency modes, off for --large",
    )
    parser.add_argument(
        "--profile",
        choices=("auto", "on", "off"),
        default="auto",
        help="torch.profiler tables of SRResNet, P + A + mixing and DASR (auto: on a GPU)",
    )
    parser.add_argument("--large", action="store_true", help="only the large-image case")
    parser.add_argument("--large-size", type=int, default=2000, help="LR side of --large")
    parser.add_argument("--tile", type=int, default=512, help="tile core (LR px) of --large")
    parser.add_argument("--large-precision", default="auto", help="upscale precision (--large)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(argv)
    if args.large:
        report = run_large(args)
        keys = (
            "seconds",
            "output",
            "peak_gpu_mem_mb",
            "peak_gpu_extra_mb",
            "host_rss_extra_mb",
            "float32_full_output_mb",
            "no_float32_full_output",
            "ok",
            "error",
        )
        for key in keys:
            if key in report:
                print(f"{key}: {report[key]}")
    else:
        report = run(args)
        print_table(report)
    print(f"wrote {report['json_path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
