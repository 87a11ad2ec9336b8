"""Results as files (STYLE point 8): long-format CSV plus a JSON sidecar, written atomically.

Every table the workbench produces is a long-format CSV with one row per
(method, dataset, level, metric) cell and the columns in `RESULT_COLUMNS`; extra columns (an image
name, a reason a value is missing, ...) are allowed after them (`write_results` is the one
writer of every experiment; `dasrlib.tables` renders the rows). Beside it, `<csv stem>.json` records
where the numbers came from: git commit, dirty flag, library versions, device, seed, config, time.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import importlib.metadata
import io
import json
import logging
import math
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from dasrlib.io import atomic_write_text, remove_stale_temporaries

__all__ = [
    "EFFICIENCY_DATASET",
    "RESULT_COLUMNS",
    "project_path",
    "read_results",
    "run_metadata",
    "sidecar_path",
    "write_results",
]

logger = logging.getLogger(__name__)

RESULT_COLUMNS: tuple[str, ...] = (
    "method",
    "dataset",
    "level",
    "metric",
    "value",
    "n_images",
    "paper_value",
)

EFFICIENCY_DATASET = "efficiency"
"""The ``dataset`` of cost rows (parameters, GMACs, latency, memory; `dasrlib.experiments.cost`)."""

_VERSIONED_PACKAGES: tuple[str, ...] = (
    "torch",
    "torchvision",
    "numpy",
    "pandas",
    "scikit-image",
    "lpips",
    "spandrel",
    "kornia",
    "safetensors",
    "dasrlib",
)

_REPO_ROOT = Path(__file__).resolve().parent.parent


def _git(args: list[str], cwd: Path) -> str | None:
    """Run a git command in `cwd`; None when git or the repository is unavailable."""
    try:
        completed = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if completed.returncode != 0:
        return None
    return completed.stdout.strip()


def _package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _device_description(device: str | torch.device | None) -> dict[str, Any]:
    """The device the numbers were measured on, with the GPU's name when it is a CUDA device."""
    info: dict[str, Any] = {
        "device": None if device is None else str(device),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_num_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_version": torch.version.cuda,
        "gpu_name": None,
    }
    if device is not None:
        dev = torch.device(device)
        if dev.type == "cuda" and torch.cuda.is_available():
            index = dev.index if dev.index is not None else torch.cuda.current_device()
            info["gpu_name"] = torch.cuda.get_device_name(index)
            info["cudnn_version"] = torch.backends.cudnn.version()
    return info


def _to_jsonable(value: Any) -> Any:
    """Convert configs (dataclasses, enums, paths, numpy scalars) into JSON-serialisable values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _to_jsonable(dataclasses.asdict(value))
    if isinstance(value, enum.Enum):
        return _to_jsonable(value.value)
    if isinstance(value, Mapping):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, (os.PathLike,)):
        return os.fspath(value)
    if isinstance(value, torch.device):
        return str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        try:
            return _to_jsonable(value.item())
        except (TypeError, ValueError, RuntimeError):
            pass
    return repr(value)


def _portable_text(text: str) -> str:
    """`text` as a record can keep it: paths inside the repository, or beside it (the optional
    shared data folder ``../shared``), relative to its root; temporary files as ``$TMPDIR/...``
    (no machine's absolute paths)."""
    temporary = f"{Path(tempfile.gettempdir()).resolve()}{os.sep}"
    repository = f"{_REPO_ROOT}{os.sep}"
    return text.replace(repository, "").replace(temporary, "$TMPDIR/")


def _portable(value: Any) -> Any:
    """Every string inside a JSON-able `value` made portable by `_portable_text`."""
    if isinstance(value, str):
        return _portable_text(value)
    if isinstance(value, dict):
        return {key: _portable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_portable(item) for item in value]
    return value


def run_metadata(
    *,
    config: Any = None,
    seed: int | None = None,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Provenance of a result: git commit and dirty flag, versions, device, seed, config, UTC time.

    `config` may be a dataclass, a mapping or any JSON-able value; it is stored as JSON.
    The git fields are None when the code does not run from a git checkout.
    """
    commit = _git(["rev-parse", "HEAD"], _REPO_ROOT)
    status = _git(["status", "--porcelain", "--untracked-files=no"], _REPO_ROOT)
    return {
        "git_commit": commit,
        "git_dirty": None if status is None else bool(status),
        "versions": _package_versions(),
        "device": _device_description(device),
        "seed": seed,
        "config": _to_jsonable(config),
        "command": _portable_text(" ".join(sys.argv)),
        "timestamp_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "hostname": platform.node(),
    }


def sidecar_path(csv_path: str | os.PathLike[str]) -> Path:
    """The JSON sidecar of a results CSV: same folder, same stem, `.json` suffix."""
    return Path(csv_path).with_suffix(".json")


def write_results(
    rows: pd.DataFrame,
    csv_path: str | os.PathLike[str],
    *,
    metadata: Mapping[str, Any],
) -> Path:
    """Write `rows` as a long-format CSV and `metadata` as its `<stem>.json` sidecar, atomically.

    Paths in the sidecar are kept portable (`_portable`: repository-relative, ``$TMPDIR/``), so
    a committed record names no machine's folders. `rows` must hold every column of
    `RESULT_COLUMNS` (extra columns follow them in their order).
    Returns the CSV path. Raises ValueError naming the missing columns.
    """
    missing = [c for c in RESULT_COLUMNS if c not in rows.columns]
    if missing:
        raise ValueError(
            f"results for {os.fspath(csv_path)!r} lack the columns {missing}; "
            f"required: {list(RESULT_COLUMNS)}"
        )
    extra = [c for c in rows.columns if c not in RESULT_COLUMNS]
    ordered = rows.loc[:, [*RESULT_COLUMNS, *extra]]
    buffer = io.StringIO()
    ordered.to_csv(buffer, index=False, lineterminator="\n")
    csv_path = Path(csv_path)
    sidecar = {
        **_portable(_to_jsonable(dict(metadata))),
        "csv": csv_path.name,
        "n_rows": int(len(ordered)),
        "columns": [str(c) for c in ordered.columns],
    }
    remove_stale_temporaries(csv_path.parent)  # a killed earlier writer's .*.tmp files
    atomic_write_text(csv_path, buffer.getvalue())
    atomic_write_text(sidecar_path(csv_path), json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    logger.info("wrote %d result rows to %s (+ %s)", len(ordered), csv_path, sidecar_path(csv_path))
    return csv_path


def read_results(csv_path: str | os.PathLike[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a results CSV and its JSON sidecar back."""
    csv_path = Path(csv_path)
    frame = pd.read_csv(csv_path)
    side = sidecar_path(csv_path)
    if not side.is_file():
        raise FileNotFoundError(f"results sidecar {side} is missing for {csv_path}")
    return frame, json.loads(side.read_text(encoding="utf-8"))


def project_path(path: str | os.PathLike[str]) -> Path:
    """`path` made absolute: a relative path is taken from the repository root.

    Notebooks run with their own folder as working directory under nbval and with the caller's
    under papermill; resolving `results/...` against the repository root (the folder holding
    `pyproject.toml` above `dasrlib/`) makes both write to the same place. Outside a checkout
    (an installed package) relative paths are taken from the current directory.
    """
    path = Path(path)
    if path.is_absolute():
        return path
    base = _REPO_ROOT if (_REPO_ROOT / "pyproject.toml").is_file() else Path.cwd()
    return base / path
