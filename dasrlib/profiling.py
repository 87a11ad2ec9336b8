"""Cost of a model (Table 2): parameters, GMACs, latency and peak GPU memory.

GMACs are torch's FLOP counter (``torch.utils.flop_counter.FlopCounterMode``, convolutions and
matmuls) halved to multiply-adds, for one image at the given size. For DASR they count the complete
inference path, `DASRInference`: predictor P, weighting A, the mixing (N x P multiply-adds) and ONE
expert with the mixed weights, not the per-sample training path. Parameters count the whole model
(all N experts). The counter runs the model, so a ``meta`` model (``--meta``) gives the counts
without computing anything: RRDB at 256x256 in well under a second instead of tens of seconds.

Command line (prints one JSON object with ``--json``)::

    python -m dasrlib.profiling --model dasr --size 256 --json [--device auto] [--latency] [--meta]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import statistics
import time
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from dasrlib.cli_options import PRECISIONS, add_device_option, add_precision_option
from dasrlib.device import DeviceUnavailableError, autocast_dtype, module_device, resolve_device
from dasrlib.models.build import build_model, model_names
from dasrlib.models.dasr import DASR, DASRInference

__all__ = ["count_gmacs", "count_parameters", "inference_module", "main", "profile_model"]

logger = logging.getLogger(__name__)

Size = int | tuple[int, int]


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (every expert of a DASR included)."""
    return sum(p.numel() for p in model.parameters())


def inference_module(model: nn.Module) -> nn.Module:
    """The module that inference runs: `DASRInference` for a `DASR`, the model otherwise."""
    return DASRInference(model) if isinstance(model, DASR) else model


def _hw(size: Size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def count_gmacs(model: nn.Module, *, size: Size = 256, on_meta: bool | None = None) -> float:
    """Multiply-adds (x 1e9) of one [1, 3, H, W] forward of the inference path.

    ``on_meta``: count on a meta-device copy, which computes nothing (RRDB at 256x256 takes under
    a second instead of tens of seconds on a CPU). None: on a meta copy for CPU models, on the
    model's own device otherwise (a model already on meta is used as it is).
    """
    device = module_device(model)
    if on_meta is None:
        on_meta = device.type == "cpu"
    if on_meta and device.type != "meta":
        model = copy.deepcopy(model).to("meta")
        device = torch.device("meta")
    height, width = _hw(size)
    image = torch.zeros(1, 3, height, width, device=device)
    counter = FlopCounterMode(display=False)
    with _eval_mode(model), torch.no_grad(), counter:
        inference_module(model)(image)
    return counter.get_total_flops() / 2 / 1e9


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode inside the block, the model's own mode restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def _precision(device: torch.device, precision: str) -> Iterator[None]:
    """Autocast for bf16/fp16; TF32 matmuls and convolutions for tf32 (restored afterwards)."""
    dtype = autocast_dtype(device, precision)
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        if dtype is None:
            yield
        else:
            with torch.autocast(device_type=device.type, dtype=dtype):
                yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _time_ms(
    module: nn.Module, image: Tensor, *, device: torch.device, repeats: int, warmup: int
) -> list[float]:
    for _ in range(warmup):
        module(image)
    times: list[float] = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(repeats):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            module(image)
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
    else:
        for _ in range(repeats):
            start_s = time.perf_counter()
            module(image)
            times.append((time.perf_counter() - start_s) * 1000.0)
    return times


def profile_model(
    model: nn.Module,
    *,
    size: Size = 256,
    device: str | torch.device = "auto",
    precision: str = "fp32",
    repeats: int = 20,
    warmup: int = 5,
    latency: bool = True,
    generator: torch.Generator | None = None,
) -> dict[str, object]:
    """Parameters, GMACs, median latency and peak memory of one [1, 3, H, W] inference.

    Returns ``params_m``, ``gmacs`` (`count_gmacs`: shapes only, precision-independent),
    ``latency_ms`` (median of ``repeats`` after ``warmup``; CUDA events on GPU, ``perf_counter`` on
    CPU; None unless ``latency``), ``latency_runs_ms``, ``peak_mem_mb`` (CUDA
    only, else None), ``device``, ``precision``, ``height``, ``width``. The model runs in eval
    mode (its mode is restored) and is moved to ``device`` when ``latency`` is set.
    """
    height, width = _hw(size)
    result: dict[str, object] = {
        "params_m": count_parameters(model) / 1e6,
        "gmacs": count_gmacs(model, size=(height, width)),
        "height": height,
        "width": width,
        "precision": precision,
        "latency_ms": None,
        "latency_runs_ms": None,
        "peak_mem_mb": None,
        "device": str(module_device(model)),
    }
    if not latency:
        return result
    target = resolve_device(device)
    module = inference_module(model).to(target)
    image = torch.rand(1, 3, height, width, generator=generator).to(target)
    if target.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(target)
    with _eval_mode(model), torch.no_grad(), _precision(target, precision):
        runs = _time_ms(module, image, device=target, repeats=repeats, warmup=warmup)
    result["latency_ms"] = statistics.median(runs)
    result["latency_runs_ms"] = runs
    result["device"] = str(target)
    if target.type == "cuda":
        result["peak_mem_mb"] = torch.cuda.max_memory_allocated(target) / 2**20
        result["device_name"] = torch.cuda.get_device_name(target)
    return result


def _parse_option(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--option expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value: object = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key, value


def _at_least(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= `low` (a usage error naming the value otherwise)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m dasrlib.profiling`` / ``dasr profile``.

    ``--model`` here names an architecture (built with random weights), not a checkpoint, so the
    checkpoint options of `add_model_options` do not apply; ``--device`` and ``--precision`` are
    the shared ones (fp32 by default: a cost measured as the paper's).
    """
    parser.add_argument(
        "--model",
        required=True,
        help=f"{', '.join(model_names())} or a Fig. 4 variant (dasr_n3, dasr_moe, ...)",
    )
    parser.add_argument(
        "--size", type=_at_least(8), default=256, help="LR height (and width) in pixels"
    )
    parser.add_argument("--width", type=_at_least(8), default=None, help="LR width if not --size")
    add_device_option(parser, note="; for --latency")
    add_precision_option(parser, default="fp32", choices=PRECISIONS[1:], note="; for --latency")
    parser.add_argument("--latency", action="store_true", help="also time the model")
    parser.add_argument(
        "--repeats", type=_at_least(1), default=20, help="timed runs (median reported)"
    )
    parser.add_argument("--warmup", type=_at_least(0), default=5, help="untimed runs before timing")
    parser.add_argument(
        "--meta",
        action="store_true",
        help="count parameters and GMACs on the meta device (no compute)",
    )
    parser.add_argument(
        "--option",
        action="append",
        type=_parse_option,
        default=[],
        help="model option key=value (JSON value), repeatable",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Print a model's cost; usage errors (unknown model or option, no such device) exit 2."""
    if args.meta and args.latency:
        parser.error("--meta counts only; drop --latency or --meta")
    try:
        resolve_device(args.device)
    except DeviceUnavailableError as error:
        parser.error(str(error))
    options = dict(args.option)
    try:
        model = build_model(args.model, **options)
    except (ValueError, TypeError) as error:  # unknown name or option
        parser.error(str(error))
    if args.meta:
        model = model.to("meta")
    size = (args.size, args.width if args.width is not None else args.size)
    result = profile_model(
        model,
        size=size,
        device=args.device,
        precision=args.precision,
        repeats=args.repeats,
        warmup=args.warmup,
        latency=args.latency,
        generator=torch.Generator().manual_seed(0),
    )
    result = {"model": args.model, "options": options, **result}
    if args.json:
        print(json.dumps(result))
    else:
        latency = result["latency_ms"]
        timing = f", {latency:.2f} ms on {result['device']}" if latency is not None else ""
        print(
            f"{args.model}: {result['params_m']:.3f} M parameters, {result['gmacs']:.1f} GMACs "
            f"at {size[0]}x{size[1]}{timing}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m dasrlib.profiling``: print a model's cost (the same as ``dasr profile``)."""
    parser = argparse.ArgumentParser(prog="python -m dasrlib.profiling", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv), parser)


if __name__ == "__main__":
    raise SystemExit(main())
