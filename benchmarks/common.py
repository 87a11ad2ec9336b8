"""Shared helpers of the benchmark scripts: timing, precision modes, memory, provenance, JSON.

Timing follows the device method: warm-up calls first, then N timed calls, median reported;
CUDA events around each call on a GPU (the host clock after a synchronize would add launch
latency), ``time.perf_counter`` on a CPU. `time_interleaved` times several callables in rounds
(A, B, C, A, B, C, ...) so that a slow phase of a shared machine hits all of them alike, and
ratios can also be taken round by round.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "results" / "benchmarks"

# Relative L2 error bounds of a precision mode against the float32 reference (device METHOD).
ERROR_BOUNDS = {"fp32": 1e-5, "tf32": 1e-3, "bf16": 1e-2, "fp16": 1e-2}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CPU_CLOCKS: dict[str, Callable[[], float]] = {
    "wall": time.perf_counter,
    "process": time.process_time,
}
_cpu_clock: Callable[[], float] = time.perf_counter


def use_cpu_clock(name: str) -> None:
    """The clock `time_call_ms` reads on a CPU: ``"wall"`` (``time.perf_counter``, the default)
    or ``"process"`` (``time.process_time``: this process's CPU time, which other processes on a
    shared machine do not inflate; with one thread it is the call's compute time)."""
    global _cpu_clock
    if name not in CPU_CLOCKS:
        raise ValueError(f"unknown CPU clock {name!r}; expected one of {sorted(CPU_CLOCKS)}")
    _cpu_clock = CPU_CLOCKS[name]


def time_call_ms(fn: Callable[[], object], device: torch.device) -> float:
    """Milliseconds of one call (CUDA events on a GPU, `use_cpu_clock`'s clock on a CPU)."""
    if device.type == "cuda":
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    begin = _cpu_clock()
    fn()
    return (_cpu_clock() - begin) * 1000.0


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    *,
    device: torch.device,
    warmup: int,
    repeats: int,
) -> dict[str, list[float]]:
    """Per-call milliseconds of each callable, timed in interleaved rounds after ``warmup``
    untimed calls of each."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(time_call_ms(fn, device))
    return times


def summarize(times_ms: list[float]) -> dict[str, float]:
    """Median, min, max and quartiles of a list of milliseconds."""
    ordered = sorted(times_ms)
    quartiles = statistics.quantiles(ordered, n=4) if len(ordered) >= 2 else [ordered[0]] * 3
    return {
        "median_ms": statistics.median(ordered),
        "min_ms": ordered[0],
        "max_ms": ordered[-1],
        "q1_ms": quartiles[0],
        "q3_ms": quartiles[2],
        "n": len(ordered),
    }


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median of the round-by-round ratios numerator[i] / denominator[i]."""
    return statistics.median(n / d for n, d in zip(numerator, denominator, strict=True))


@dataclass(frozen=True)
class Mode:
    """A precision / layout / execution mode of a benchmark.

    ``dtype``: the dtype the network is converted to (``None``: float32 weights);
    ``autocast``: autocast dtype (``None``: off); ``tf32``: TF32 matmuls and convolutions;
    ``channels_last``; ``runner``: ``"eager"``, ``"cudagraph"`` or ``"compile"``;
    ``precision``: which error bound applies (a key of `ERROR_BOUNDS`).
    """

    name: str
    precision: str
    dtype: str = "fp32"
    autocast: torch.dtype | None = None
    tf32: bool = False
    channels_last: bool = False
    runner: str = "eager"

    def describe(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "dtype": self.dtype,
            "autocast": None if self.autocast is None else str(self.autocast),
            "tf32": self.tf32,
            "channels_last": self.channels_last,
            "runner": self.runner,
        }


@contextlib.contextmanager
def mode_context(mode: Mode, device: torch.device) -> Iterator[None]:
    """TF32 switches and autocast of ``mode`` (restored afterwards); no grad."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = mode.tf32
        torch.backends.cudnn.allow_tf32 = mode.tf32
    try:
        with torch.no_grad():
            if mode.autocast is None:
                yield
            else:
                with torch.autocast(device_type=device.type, dtype=mode.autocast):
                    yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def relative_l2(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64 (NaN when ``out`` holds NaN/Inf)."""
    out64, ref64 = out.double(), ref.double()
    if not bool(torch.isfinite(out64).all()):
        return float("nan")
    return float((out64 - ref64).norm() / ref64.norm().clamp_min(1e-30))


def device_kind(device: torch.device) -> str:
    """``cuda`` or ``cpu``: the suffix of the result files."""
    return device.type


def _git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def environment(device: torch.device) -> dict[str, Any]:
    """Device name, versions, git commit, threads and load: what a timing depends on."""
    info: dict[str, Any] = {
        "device": str(device),
        "device_kind": device_kind(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(),
        "git_commit": _git_commit() or os.environ.get("DASR_GIT_COMMIT"),
        "hostname": platform.node(),
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "command": " ".join(sys.argv),
        "timestamp_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["device_name"] = props.name
        info["device_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cudnn_benchmark"] = torch.backends.cudnn.benchmark
    else:
        info["device_name"] = platform.processor() or platform.machine()
    return info


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as indented JSON atomically (temp file in the folder, then rename)."""
    text = json.dumps(payload, indent=1, default=str) + "\n"
    try:
        from dasrlib.io import atomic_write_text
    except ImportError:  # a bare machine without the image libraries dasrlib.io needs
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, path)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return path


class Budget:
    """Wall-clock budget of a benchmark run (seconds since construction)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def remaining(self) -> float:
        return self.seconds - self.elapsed()


def current_rss_bytes() -> int | None:
    """Resident set size of this process now (Linux /proc), None elsewhere."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


class RSSSampler:
    """Samples this process's RSS every ``interval_s`` in a thread; ``peak`` is the largest seen.

    Use as a context manager around the work to measure.
    """

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.start_bytes = current_rss_bytes()
        self.peak_bytes = self.start_bytes or 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = current_rss_bytes()
            if rss is not None:
                self.peak_bytes = max(self.peak_bytes, rss)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RSSSampler:
        self.start_bytes = current_rss_bytes()
        self.peak_bytes = self.start_bytes or 0
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        rss = current_rss_bytes()
        if rss is not None:
            self.peak_bytes = max(self.peak_bytes, rss)


def error_text(error: BaseException) -> str:
    """One line naming an exception, for the JSON of a variant that failed."""
    return f"{type(error).__name__}: {error}".splitlines()[0][:500]
