"""The device checks of a lease: the environment before anything runs, the returned files after.

Only the standard library is imported at module level so that `check_environment` can name every
missing package before anything imports one.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from dasrlib.lease import (
    MIB,
    REQUIRED_MODULES,
    RETURN_FILE_LIMIT_BYTES,
    RETURN_MAX_FILES,
    RETURN_TOTAL_LIMIT_BYTES,
)

__all__ = ["EnvironmentProblem", "check_environment", "check_return_limits"]


class EnvironmentProblem(RuntimeError):
    """The device lacks something the lease needs; the message lists everything missing."""


def check_environment(*, device: str) -> dict[str, Any]:
    """Fail fast, naming every problem: Python, packages, WebP decoding, CUDA when asked for."""
    problems = []
    missing = [m for m in REQUIRED_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        problems.append(f"missing Python packages: {', '.join(missing)}")
    if problems:
        raise EnvironmentProblem("; ".join(problems))
    import PIL
    import torch
    from PIL import features

    if not features.check("webp"):
        problems.append(f"Pillow {PIL.__version__} cannot decode WebP (the carried images)")
    info = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "pillow": PIL.__version__,
        "cuda_available": torch.cuda.is_available(),
    }
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            problems.append(f"device {device!r} requested but torch.cuda.is_available() is False")
        else:
            info["gpu"] = torch.cuda.get_device_name(0)
    if problems:
        raise EnvironmentProblem("; ".join(problems))
    info["optional"] = {
        m: importlib.util.find_spec(m) is not None for m in ("lpips", "torchvision", "tqdm")
    }
    return info


def check_return_limits(out_dir: Path) -> list[dict[str, Any]]:
    """The files in `out_dir` with their sizes; raises ValueError when they break the limits."""
    entries = sorted(p for p in out_dir.rglob("*"))
    files = [p for p in entries if p.is_file()]
    others = [p for p in entries if not p.is_file() and not p.is_dir()]
    rows = [{"file": p.relative_to(out_dir).as_posix(), "bytes": p.stat().st_size} for p in files]
    problems = []
    if others:
        problems.append(f"not plain files: {[str(p) for p in others]}")
    if len(files) > RETURN_MAX_FILES:
        problems.append(f"{len(files)} files (limit {RETURN_MAX_FILES})")
    big = [r for r in rows if r["bytes"] > RETURN_FILE_LIMIT_BYTES]
    if big:
        problems.append(f"over {RETURN_FILE_LIMIT_BYTES // MIB} MiB: {big}")
    total = sum(r["bytes"] for r in rows)
    if total > RETURN_TOTAL_LIMIT_BYTES:
        problems.append(f"{total / MIB:.1f} MiB in all (limit {RETURN_TOTAL_LIMIT_BYTES // MIB})")
    if problems:
        raise ValueError(f"returned files in {out_dir} break the limits: " + "; ".join(problems))
    return rows
