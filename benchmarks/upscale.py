"""`dasr upscale` in bf16 against fp32, end to end: speed, DASR vs SRResNet and Real-ESRGAN,
peak memory, and what bf16 costs in quality (Sec. 3.1's inference path; issue: bf16 on the CPU).

    python benchmarks/upscale.py --device cpu                        # every section
    python benchmarks/upscale.py --sections latency                  # timings: a quiet machine
    python benchmarks/upscale.py --sections memory,quality           # not timings

Every timed call is what ``dasr upscale`` does per image (`dasrlib.inference.upscale_to_file`):
read the PNG, predictor P, weighting A and the mixing (Eq. 2), the fused network over tiles of
`DEFAULT_TILE`, the PNG written. Modes: ``fp32`` and ``bf16`` in the device's default layout
(`dasrlib.device.prefers_channels_last`), plus ``fp32_cl`` (fp32 channels-last) and
``bf16_nchw`` (bf16 autocast in the plain layout) to show what the layout alone does.

Sections, each written under its own key of ``results/benchmarks/upscale_<device>.json`` with
its own environment (a run of some sections keeps the others' results):

- ``latency``: a 339x510 LR photo (a Set14 image resized) through a seeded random full-size DASR
  and an SRResNet of the same topology in every mode, timed in interleaved rounds: medians, the
  bf16 speed-ups and DASR / SRResNet per mode, and the GMACs of each network.
- ``realesrgan``: the same photo through DASR and the converted Real-ESRGAN x4plus (`python -m
  dasrlib.data fetch realesrgan-x4plus`) side by side, interleaved, in ``--realesrgan-modes``
  (default bf16): Real-ESRGAN / DASR per mode against their GMACs ratio.
- ``memory``: a 2000x1500 LR image through the same call in a child process with the default
  tiles; the child's peak RSS (``VmHWM``, everything the process held at its peak, torch's
  libraries included; ``ru_maxrss`` is also recorded, but Linux carries it over from the
  forking parent across ``exec``, so it can overstate the child).
- ``quality``: Real-ESRGAN on the seeded Set14 test sets (`dasrlib.testsets`, every level),
  PSNR-Y against HR (`dasrlib.metrics.psnr_y`) in fp32 and bf16 and its change per level; and
  the bf16 / fp32 agreement of the random DASR (a random DASR's PSNR means nothing, its outputs'
  agreement does). Both precisions run channels-last here: the layout changes only the order of
  float32 sums, and it keeps this (untimed) section short on a CPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from common import (
    REPO_ROOT,
    RESULTS_DIR,
    device_kind,
    environment,
    error_text,
    paired_ratio,
    summarize,
    time_interleaved,
    write_json,
)
from torch import nn

from dasrlib.device import autocast_dtype, describe_precision, resolve_device
from dasrlib.inference import DEFAULT_TILE, upscale, upscale_to_file
from dasrlib.io import read_image, write_png
from dasrlib.metrics import psnr_y
from dasrlib.models.dasr import DASR
from dasrlib.models.experts import SRResNet
from dasrlib.models.loading import load_sr_model
from dasrlib.pretrained import REALESRGAN_FILE, weights_dir
from dasrlib.testsets import load_testset, prepare_testsets

logger = logging.getLogger("benchmarks.upscale")

SECTIONS = ("latency", "realesrgan", "memory", "quality")
MODES: dict[str, tuple[str, bool | None]] = {  # name -> (precision, channels_last; None: default)
    "fp32": ("fp32", None),
    "fp32_cl": ("fp32", True),
    "bf16": ("bf16", None),
    "bf16_nchw": ("bf16", False),
}
LEVELS = ("bicubic", "weak", "standard", "severe")
TARGETS = {
    "bf16_speedup_min": 2.5,
    "dasr_over_srresnet_bf16_max": 1.10,
    "realesrgan_over_dasr_expected": 6.0,  # their GMACs ratio, measured in the realesrgan section
    "psnr_y_change_db_max": 0.05,
    "peak_rss_gb_max": 3.0,
}
DEFAULT_SET14 = REPO_ROOT.parent / "shared" / "data" / "eval" / "Set14"


# --------------------------------------------------------------------------------------------
# Models and images
# --------------------------------------------------------------------------------------------


def build_models(names: list[str], *, seed: int) -> dict[str, nn.Module]:
    """Seeded random DASR (paper size) and SRResNet, and the converted Real-ESRGAN x4plus."""
    generator = torch.Generator().manual_seed(seed)
    builders: dict[str, Callable[[], nn.Module]] = {
        "dasr": lambda: DASR(generator=generator),
        "srresnet": lambda: SRResNet(generator=generator),
        "realesrgan": lambda: load_sr_model(weights_dir() / REALESRGAN_FILE),
    }
    return {name: builders[name]().eval() for name in names}


def write_photo(source: Path, out: Path, *, height: int, width: int) -> Path:
    """``source`` resized (bicubic, antialiased) to height x width, written as an 8-bit PNG."""
    rgb = read_image(source).rgb[None]
    resized = F.interpolate(rgb, size=(height, width), mode="bicubic", antialias=True)
    write_png(out, resized[0].clamp(0.0, 1.0))
    return out


def count_gmacs_at(models: dict[str, nn.Module], height: int, width: int) -> dict[str, Any]:
    """GMACs of one image per network (torch's FLOP counter on meta copies)."""
    from dasrlib.profiling import count_gmacs

    try:
        return {name: count_gmacs(model, size=(height, width)) for name, model in models.items()}
    except Exception as error:  # recorded; the timings do not depend on it
        return {"error": error_text(error)}


# --------------------------------------------------------------------------------------------
# Latency
# --------------------------------------------------------------------------------------------


def run_latency(args: argparse.Namespace, device: torch.device, work: Path) -> dict[str, Any]:
    """DASR and SRResNet in ``--modes``."""
    models = {"dasr": args.modes, "srresnet": args.modes}
    return time_models(models, args=args, device=device, work=work)


def run_realesrgan(args: argparse.Namespace, device: torch.device, work: Path) -> dict[str, Any]:
    """DASR and Real-ESRGAN x4plus side by side in ``--realesrgan-modes``."""
    models = {"dasr": args.realesrgan_modes, "realesrgan": args.realesrgan_modes}
    return time_models(models, args=args, device=device, work=work)


def time_models(
    modes_of: dict[str, list[str]], *, args: argparse.Namespace, device: torch.device, work: Path
) -> dict[str, Any]:
    """Interleaved rounds of `upscale_to_file` per (model, mode); medians and the ratios."""
    height, width = args.size
    photo = write_photo(args.photo, work / "photo.png", height=height, width=width)
    built = build_models(list(modes_of), seed=0)
    models = {name: model.to(device) for name, model in built.items()}
    calls: dict[str, Callable[[], object]] = {}
    for name, model in models.items():
        for mode in modes_of[name]:
            precision, channels_last = MODES[mode]

            def call(model=model, precision=precision, channels_last=channels_last, key=name):
                return upscale_to_file(
                    photo,
                    model,
                    work / f"{key}_x4.png",
                    tile=DEFAULT_TILE,
                    precision=precision,
                    channels_last=channels_last,
                )

            calls[f"{name}/{mode}"] = call
    begin = time.perf_counter()
    # Warm-up at the timed size: the first call of a shape and layout sets up oneDNN's
    # convolution primitives (seconds on a CPU), which later calls reuse.
    times = time_interleaved(calls, device=device, warmup=args.warmup, repeats=args.rounds)
    medians = {key: statistics.median(runs) for key, runs in times.items()}
    result: dict[str, Any] = {
        "environment": environment(device),
        "input": {"height": height, "width": width, "photo": str(args.photo), "tile": DEFAULT_TILE},
        "modes": {
            mode: {
                "precision": MODES[mode][0],
                "channels_last": MODES[mode][1],
                "resolves_to": describe_precision(device, MODES[mode][0]),
            }
            for mode in MODES
        },
        "auto_resolves_to": describe_precision(device, "auto"),
        "rounds": args.rounds,
        "warmup": args.warmup,
        "seconds": round(time.perf_counter() - begin, 1),
        "latency_ms": {
            key: {**summarize(runs), "runs_ms": [round(t, 1) for t in runs]}
            for key, runs in times.items()
        },
        "gmacs": count_gmacs_at(models, height, width),
    }
    result["ratios"] = latency_ratios(times, medians)
    return result


def latency_ratios(times: dict[str, list[float]], medians: dict[str, float]) -> dict[str, Any]:
    """bf16 speed-ups per model, DASR / SRResNet and Real-ESRGAN / DASR per mode: ratios of
    medians, of the fastest runs (``min``: robust to a busy shared host) and, as ``paired``, the
    median of the round-by-round ratios."""

    def pair(numerator: str, denominator: str) -> dict[str, float] | None:
        if numerator not in medians or denominator not in medians:
            return None
        ratio = {
            "median": medians[numerator] / medians[denominator],
            "min": min(times[numerator]) / min(times[denominator]),
        }
        if len(times[numerator]) == len(times[denominator]):
            ratio["paired"] = paired_ratio(times[numerator], times[denominator])
        return ratio

    models = sorted({key.split("/")[0] for key in times})
    ratios: dict[str, Any] = {"bf16_speedup": {}, "dasr_over_srresnet": {}}
    ratios["realesrgan_over_dasr"] = {}
    for model in models:
        for baseline in ("fp32", "fp32_cl", "bf16_nchw"):
            ratio = pair(f"{model}/{baseline}", f"{model}/bf16")
            if ratio is not None:
                ratios["bf16_speedup"][f"{model}: {baseline} / bf16"] = ratio
    for mode in MODES:
        ratio = pair(f"dasr/{mode}", f"srresnet/{mode}")
        if ratio is not None:
            ratios["dasr_over_srresnet"][mode] = ratio
        ratio = pair(f"realesrgan/{mode}", f"dasr/{mode}")
        if ratio is not None:
            ratios["realesrgan_over_dasr"][mode] = ratio
    return ratios


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (``VmHWM`` of /proc/self/status), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("/proc/self/status has no VmHWM line")


def memory_child(args: argparse.Namespace) -> None:
    """In the child process: one `upscale_to_file` of ``--memory-image``; JSON on stdout."""
    device = resolve_device(args.device)
    (model,) = build_models(["dasr"], seed=0).values()
    model = model.to(device)
    rss_ready_mb = peak_rss_mb()
    begin = time.perf_counter()
    out = upscale_to_file(
        args.memory_image,
        model,
        args.memory_image.with_name("large_x4.png"),
        tile=DEFAULT_TILE,
        precision=args.memory_precision,
    )
    seconds = time.perf_counter() - begin
    peak_mb = peak_rss_mb()
    print(
        json.dumps(
            {
                "precision": args.memory_precision,
                "resolves_to": describe_precision(device, args.memory_precision),
                "output_shape": list(out.rgb.shape),
                "output_dtype": str(out.rgb.dtype),
                "seconds": round(seconds, 1),
                "peak_rss_before_upscale_mb": round(rss_ready_mb, 1),
                "peak_rss_mb": round(peak_mb, 1),
                "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            }
        )
    )


def run_memory(args: argparse.Namespace, device: torch.device, work: Path) -> dict[str, Any]:
    """Peak RSS of a child process that upscales a large LR image (default tiles, uint8 PNG)."""
    height, width = args.memory_size
    image = write_photo(args.photo, work / "large.png", height=height, width=width)
    result: dict[str, Any] = {
        "environment": environment(device),
        "input": {"height": height, "width": width, "tile": DEFAULT_TILE, "model": "dasr"},
        "runs": {},
    }
    for precision in args.memory_precisions:
        command = [sys.executable, str(Path(__file__).resolve()), "--device", args.device]
        command += ["--memory-child", "--memory-image", str(image)]
        command += ["--memory-precision", precision]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            result["runs"][precision] = {"error": done.stderr.strip().splitlines()[-1:]}
            continue
        record = json.loads(done.stdout.strip().splitlines()[-1])
        record["peak_rss_gb"] = round(record["peak_rss_mb"] / 1024, 3)
        result["runs"][precision] = record
    return result


# --------------------------------------------------------------------------------------------
# Quality
# --------------------------------------------------------------------------------------------


def _sr(image: torch.Tensor, model: nn.Module, precision: str) -> torch.Tensor:
    return upscale(image, model, tile=DEFAULT_TILE, precision=precision, channels_last=True)


def _agreement(bf16: torch.Tensor, fp32: torch.Tensor, lr: torch.Tensor) -> dict[str, float]:
    """PSNR-Y of the bf16 output against the fp32 one, and the relative L2 difference of the
    whole output and of its residual (the output minus the bilinear upscale of the input)."""
    bilinear = F.interpolate(lr[None], scale_factor=4, mode="bilinear")[0].clamp(0.0, 1.0)
    difference = (bf16 - fp32).double().norm()
    return {
        "psnr_y_bf16_vs_fp32_db": psnr_y(bf16, fp32),
        "rel_l2": float(difference / fp32.double().norm()),
        "rel_l2_residual": float(difference / (fp32 - bilinear).double().norm()),
    }


def run_quality(args: argparse.Namespace, device: torch.device, work: Path) -> dict[str, Any]:
    """Real-ESRGAN PSNR-Y on Set14 (every level) in fp32 and bf16; random-DASR agreement."""
    prepared = prepare_testsets(
        args.set14, args.testsets, levels=LEVELS, seed=0, max_images=None, device="cpu"
    )
    models = build_models(["realesrgan", "dasr"], seed=0)
    esrgan = models["realesrgan"].to(device)
    result: dict[str, Any] = {
        "environment": environment(device),
        "testsets": {"dir": str(args.testsets), "message": prepared.message},
        "layout": "channels-last in both precisions",
        "realesrgan": {},
    }
    begin = time.perf_counter()
    for level in LEVELS:
        rows = []
        for name, lr, hr, _ in load_testset(args.testsets, level):
            sr32, sr16 = _sr(lr, esrgan, "fp32"), _sr(lr, esrgan, "bf16")
            fp32_db, bf16_db = psnr_y(sr32, hr), psnr_y(sr16, hr)
            rows.append(
                {
                    "image": name,
                    "psnr_y_fp32_db": fp32_db,
                    "psnr_y_bf16_db": bf16_db,
                    "change_db": bf16_db - fp32_db,
                    **_agreement(sr16, sr32, lr),
                }
            )
        fp32_mean = statistics.fmean(row["psnr_y_fp32_db"] for row in rows)
        bf16_mean = statistics.fmean(row["psnr_y_bf16_db"] for row in rows)
        result["realesrgan"][level] = {
            "n_images": len(rows),
            "psnr_y_fp32_db": fp32_mean,
            "psnr_y_bf16_db": bf16_mean,
            "change_db": bf16_mean - fp32_mean,
            "max_abs_image_change_db": max(abs(row["change_db"]) for row in rows),
            "images": rows,
        }
        logger.info("%s: fp32 %.3f dB, bf16 %.3f dB", level, fp32_mean, bf16_mean)
    height, width = args.size
    photo = read_image(write_photo(args.photo, work / "photo.png", height=height, width=width))
    dasr = models["dasr"].to(device)
    result["dasr_random_agreement"] = {
        "input": {"height": height, "width": width},
        **_agreement(_sr(photo.rgb, dasr, "bf16"), _sr(photo.rgb, dasr, "fp32"), photo.rgb),
    }
    result["seconds"] = round(time.perf_counter() - begin, 1)
    return result


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def meets(report: dict[str, Any]) -> dict[str, Any]:
    """Each target against what the sections present measured (None: not measured)."""
    latency = report.get("latency", {}).get("ratios", {})
    speedup = latency.get("bf16_speedup", {}).get("dasr: fp32 / bf16", {}).get("median")
    speedup_cl = latency.get("bf16_speedup", {}).get("dasr: fp32_cl / bf16", {}).get("median")
    dasr_ratio = latency.get("dasr_over_srresnet", {}).get("bf16", {}).get("median")
    side_by_side = report.get("realesrgan", {}).get("ratios", {})
    esrgan_ratio = side_by_side.get("realesrgan_over_dasr", {}).get("bf16", {}).get("median")
    gmacs = report.get("realesrgan", {}).get("gmacs", {})
    gmacs_ratio = gmacs["realesrgan"] / gmacs["dasr"] if "dasr" in gmacs else None
    quality = report.get("quality", {}).get("realesrgan", {})
    changes = [abs(level["change_db"]) for level in quality.values()]
    memory = report.get("memory", {}).get("runs", {}).get("bf16", {})
    peak = memory.get("peak_rss_gb")
    return {
        "bf16_speedup_vs_fp32": speedup,
        "bf16_speedup_ok": None if speedup is None else speedup >= TARGETS["bf16_speedup_min"],
        "bf16_speedup_vs_fp32_channels_last": speedup_cl,
        "dasr_over_srresnet_bf16": dasr_ratio,
        "dasr_over_srresnet_ok": None
        if dasr_ratio is None
        else dasr_ratio <= TARGETS["dasr_over_srresnet_bf16_max"],
        "realesrgan_over_dasr_bf16": esrgan_ratio,
        "realesrgan_over_dasr_gmacs": gmacs_ratio,
        "psnr_y_change_db_max": max(changes) if changes else None,
        "psnr_y_ok": None if not changes else max(changes) <= TARGETS["psnr_y_change_db_max"],
        "peak_rss_gb_bf16": peak,
        "peak_rss_ok": None if peak is None else peak <= TARGETS["peak_rss_gb_max"],
    }


def _read_report(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        logger.warning("%s is not JSON; starting a new report", path)
        return {}


def _size(text: str) -> tuple[int, int]:
    height, _, width = text.lower().partition("x")
    return int(height), int(width or height)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, auto")
    parser.add_argument(
        "--sections", type=lambda t: t.split(","), default=list(SECTIONS), help="comma list"
    )
    parser.add_argument("--size", type=_size, default=(339, 510), help="latency LR HxW")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls of each first")
    parser.add_argument("--modes", type=lambda t: t.split(","), default=list(MODES))
    parser.add_argument(
        "--realesrgan-modes",
        type=lambda t: t.split(","),
        default=["bf16"],
        help="modes of the realesrgan section (Real-ESRGAN takes about 8x DASR's time)",
    )
    parser.add_argument("--memory-size", type=_size, default=(1500, 2000), help="LR HxW")
    parser.add_argument("--memory-precisions", type=lambda t: t.split(","), default=["bf16"])
    parser.add_argument("--photo", type=Path, default=DEFAULT_SET14 / "barbara.png")
    parser.add_argument("--set14", type=Path, default=DEFAULT_SET14)
    parser.add_argument(
        "--testsets", type=Path, default=REPO_ROOT / "data" / "testsets" / "shared_set14"
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--memory-image", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--memory-precision", default="bf16", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = [name for name in args.sections if name not in SECTIONS]
    unknown += [name for name in args.modes + args.realesrgan_modes if name not in MODES]
    if unknown:
        parser.error(f"unknown sections or modes {unknown}; sections {SECTIONS}, modes {MODES}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.memory_child:
        memory_child(args)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    device = resolve_device(args.device)
    out_path = args.out or RESULTS_DIR / f"upscale_{device_kind(device)}.json"
    report = _read_report(out_path)
    report["benchmark"] = "dasr upscale end to end: bf16 vs fp32, DASR vs SRResNet, Real-ESRGAN"
    report["targets"] = TARGETS
    report["cpu_bf16_units"] = autocast_dtype(torch.device("cpu"), "auto") == torch.bfloat16
    runners = {
        "latency": run_latency,
        "realesrgan": run_realesrgan,
        "memory": run_memory,
        "quality": run_quality,
    }
    with tempfile.TemporaryDirectory(prefix="dasr-upscale-bench-") as folder:
        for section in args.sections:
            logger.info("section %s", section)
            try:
                report[section] = runners[section](args, device, Path(folder))
            except Exception as error:
                report[section] = {"environment": environment(device), "error": error_text(error)}
                logger.exception("section %s failed", section)
            report["meets"] = meets(report)
            write_json(out_path, report)
    print(json.dumps(report["meets"], indent=1))
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
