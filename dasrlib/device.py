"""Device and precision resolution: the one place that decides where tensors live and in which
precision they are computed (`autocast_dtype`, and `PrecisionGuard`, the precision policy of a
network run: autocast with the float32 fallback on overflow)."""

from __future__ import annotations

import contextlib
import logging
import platform
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

__all__ = [
    "DeviceUnavailableError",
    "PrecisionGuard",
    "autocast_dtype",
    "cpu_has_bf16",
    "describe_cpu",
    "describe_precision",
    "module_device",
    "prefers_channels_last",
    "resolve_device",
]

logger = logging.getLogger(__name__)


class DeviceUnavailableError(RuntimeError):
    """A device was asked for by name but is not usable here; the message names it."""


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """Return a concrete device for ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...

    ``"auto"`` picks CUDA when available, otherwise CPU. An unknown name, CUDA on a machine
    without it, or a CUDA index past the last GPU raises `DeviceUnavailableError` naming `spec`.
    """
    if isinstance(spec, torch.device):
        device = spec
    elif spec == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(spec)
        except (RuntimeError, TypeError) as error:
            raise DeviceUnavailableError(
                f"unknown device {spec!r}; expected auto, cpu, cuda or cuda:K"
            ) from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(
                f"device {str(spec)!r} requested but CUDA is not available on this machine"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceUnavailableError(
                f"device {str(spec)!r} requested but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
    return device


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bf16 matrix products natively (AVX512-BF16 or AMX tiles), as torch
    and its oneDNN build report it."""
    return bool(
        torch.backends.mkldnn.is_available()
        and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    )


def describe_cpu() -> str:
    """The CPU in words: its model name (``/proc/cpuinfo`` on Linux) and its bf16 units (AMX
    tiles, AVX512-BF16 or none), which set how fast bf16 training runs (a model card's
    hardware line)."""
    name = platform.processor() or platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
        name = next(
            (ln.partition(":")[2].strip() for ln in lines if ln.startswith("model name")), name
        )
    except OSError:
        pass
    if not torch.backends.mkldnn.is_available():
        units = "bf16 unused: torch has no oneDNN"
    elif torch.cpu._is_amx_tile_supported():
        units = "AMX bf16 tiles"
    elif torch.cpu._is_avx512_bf16_supported():
        units = "AVX512-BF16, no AMX"
    else:
        units = "no bf16 units"
    return f"{name} ({units})"


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """Autocast dtype for ``precision`` (auto, fp32, tf32, bf16, fp16); None means fp32.

    ``"auto"`` is bf16 on a CUDA device that supports it, bf16 on a CPU with bf16 matrix units
    (`cpu_has_bf16`), and fp32 elsewhere; ``"fp32"`` keeps full precision anywhere.
    """
    if precision in ("fp32", "tf32"):
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        if device.type == "cpu" and cpu_has_bf16():
            return torch.bfloat16
        return None
    raise ValueError(f"unknown precision {precision!r}; expected auto, fp32, tf32, bf16 or fp16")


def prefers_channels_last(device: torch.device, dtype: torch.dtype | None) -> bool:
    """Channels-last activations by default: on CUDA, and on a CPU running bf16 (oneDNN's
    bf16 convolutions are fastest in NHWC); plain layout for fp32 on a CPU."""
    return device.type == "cuda" or (device.type == "cpu" and dtype == torch.bfloat16)


def describe_precision(
    device: torch.device, precision: str = "auto", *, channels_last: bool | None = None
) -> str:
    """One line for logs and records: what ``precision`` resolves to on ``device``, and the
    layout (``channels_last``; None: `prefers_channels_last`)."""
    dtype = autocast_dtype(device, precision)
    name = "fp32" if dtype is None else str(dtype).replace("torch.", "")
    if precision == "tf32" and device.type == "cuda":
        name = "tf32"
    if channels_last is None:
        channels_last = prefers_channels_last(device, dtype)
    layout = "channels-last" if channels_last else "contiguous"
    mode = name if dtype is None else f"{name} autocast"
    return f"{mode}, {layout} (precision {precision!r} on {device})"


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter (or buffer); CPU for a module with neither."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


class PrecisionGuard:
    """Autocast for one precision mode; a bf16 / fp16 result that overflowed is recomputed in fp32.

    ``channels_last``: tiles are handed to the network in channels-last memory format (give it
    a network whose kernels are channels-last too: a mixed layout is slower than either). A
    reduced-precision (fp16 / bf16) output that holds NaN or Inf is recomputed in float32 (same
    layout), and float32 is kept for the rest of the image; a warning names what overflowed.
    """

    def __init__(
        self, device: torch.device, precision: str, *, channels_last: bool = False
    ) -> None:
        self.device = device
        self.precision = precision
        self.dtype = autocast_dtype(device, precision)
        self.channels_last = channels_last

    def _context(self) -> contextlib.AbstractContextManager[object]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def run(self, fn: Callable[[Tensor], Tensor], x: Tensor, *, what: str) -> Tensor:
        """``fn(x)`` as float32, recomputed in float32 if the reduced precision overflowed."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self._context():
            out = fn(x)
        out = out.float()
        # One float64 sum is non-finite exactly when an element is (a sum of finite float32
        # values cannot overflow float64): one pass instead of isfinite's three.
        if bool(torch.isfinite(out.sum(dtype=torch.float64))):
            return out
        if self.dtype is None:
            raise FloatingPointError(f"{what}: the network produced NaN/Inf in float32")
        logger.warning(
            "%s: %s output holds NaN/Inf (overflow); recomputing in float32 and keeping float32 "
            "for the rest of this image",
            what,
            self.precision,
        )
        self.dtype = None
        return self.run(fn, x, what=what)
