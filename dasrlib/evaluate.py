"""Methods over seeded test sets, long-format results (DESIGN section 3; Tables 1 and 2).

A `Method` names one way of producing x4 SR: bicubic interpolation, one of our checkpoints (DASR or
a retrained backbone, read by `dasrlib.models.load_model`), an official DASR checkpoint (net_g +
net_p), or a third-party checkpoint read through spandrel (RRDB/ESRGAN, BSRGAN, Real-ESRGAN,
SwinIR). `evaluate` runs one method over the test sets built by `dasrlib.testsets` and returns
long-format rows (STYLE point 8): one row per image and metric, then one mean row per
(level, metric) carrying `n_images`. LPIPS rows say "n/a: ..." in `note` when the AlexNet
weights are missing; a metric that fails raises an error naming the image, it never drops it.

`table1` and `table2` assemble the paper's tables: a method without weights keeps its rows, marked
"not provided"; `comparison_table` renders "ours; paper; difference" per cell. Table 2 trains its
networks with one shared budget (`table2_configs`, `train_or_load`) and adds their cost measured on
the current device (`efficiency_rows`), with ratios to SRResNet beside the paper's V100 ratios.
"""

from __future__ import annotations

import copy
import enum
import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from dasrlib.config import config_hash, load_config
from dasrlib.data import (
    DatasetNotFoundError,
    EmbeddedPhotos,
    default_data_root,
    find_dataset_root,
    list_image_files,
)
from dasrlib.io import atomic_write, atomic_write_text, read_image, write_png
from dasrlib.metrics import LPIPSMetric, LPIPSUnavailable, psnr_y, ssim_y
from dasrlib.models.checkpoints import import_official_dasr, load_model, load_third_party
from dasrlib.profiling import count_gmacs, profile_model
from dasrlib.results import (
    RESULT_COLUMNS,
    markdown_table,
    project_path,
    run_metadata,
    write_results,
)
from dasrlib.testsets import MANIFEST_NAME, build_testsets, load_testset, read_testset_manifest
from dasrlib.train import TrainConfig, resume_hash, train

__all__ = [
    "EFFICIENCY_METRICS",
    "EFFICIENCY_REFERENCE",
    "EvaluationError",
    "LEVELS",
    "METRIC_LPIPS",
    "METRIC_PSNR",
    "METRIC_SSIM",
    "METRIC_V_MAE",
    "Method",
    "MethodKind",
    "MethodSpec",
    "NOT_PROVIDED",
    "PAPER_LEVEL_NAMES",
    "PAPER_TABLE1",
    "PAPER_TABLE2",
    "PAPER_TABLE2_EFFICIENCY",
    "QUALITY_METRICS",
    "TABLE1_THIRD_PARTY",
    "TABLE2_TRAINING",
    "TableResult",
    "PreparedTestsets",
    "TrainedRun",
    "Upscaler",
    "comparison_table",
    "efficiency_rows",
    "efficiency_table",
    "evaluate",
    "evaluate_methods",
    "load_upscaler",
    "method_from_spec",
    "network_upscaler",
    "not_provided_rows",
    "paper_value",
    "prepare_testsets",
    "resolve_eval_hr_root",
    "style_table",
    "table1",
    "table2",
    "table2_configs",
    "testset_summary",
    "train_or_load",
    "write_table",
]

logger = logging.getLogger(__name__)

LEVELS: tuple[str, ...] = ("bicubic", "weak", "standard", "severe")
"""The four test sets of Tables 1 and 2, in the paper's order."""

PAPER_LEVEL_NAMES: dict[str, str] = {
    "bicubic": "Bicubic",
    "weak": "Level-I",
    "standard": "Level-II",
    "severe": "Level-III",
}

METRIC_PSNR = "psnr_y_db"
METRIC_SSIM = "ssim_y"
METRIC_LPIPS = "lpips_alex"
METRIC_V_MAE = "v_mae"
NOT_PROVIDED = "not provided"

# --------------------------------------------------------------------------------------------------
# The paper's numbers (DESIGN section 3): {method: {level: (PSNR-Y dB, LPIPS)}}
# --------------------------------------------------------------------------------------------------

PAPER_TABLE1: dict[str, dict[str, tuple[float, float]]] = {
    "RRDB": {
        "bicubic": (30.92, 0.2537),
        "weak": (26.27, 0.3419),
        "standard": (26.46, 0.4441),
        "severe": (23.91, 0.7631),
    },
    "ESRGAN": {
        "bicubic": (28.17, 0.1154),
        "weak": (21.16, 0.4727),
        "standard": (22.77, 0.4900),
        "severe": (23.63, 0.7314),
    },
    "IKC": {
        "bicubic": (28.01, 0.2695),
        "weak": (24.09, 0.3805),
        "standard": (25.39, 0.4531),
        "severe": (22.91, 0.7583),
    },
    "BSRGAN": {
        "bicubic": (27.32, 0.2364),
        "weak": (26.78, 0.2412),
        "standard": (26.75, 0.2462),
        "severe": (24.05, 0.3995),
    },
    "Real-ESRGAN": {
        "bicubic": (26.65, 0.2284),
        "weak": (26.17, 0.2312),
        "standard": (26.16, 0.2391),
        "severe": (23.81, 0.3901),
    },
    "Real-SwinIR-M": {
        "bicubic": (26.83, 0.2221),
        "weak": (26.21, 0.2247),
        "standard": (26.12, 0.2313),
        "severe": (23.34, 0.3844),
    },
    "Real-SwinIR-L": {
        "bicubic": (27.21, 0.2135),
        "weak": (26.45, 0.2161),
        "standard": (26.39, 0.2213),
        "severe": (23.46, 0.3765),
    },
    "DASR": {
        "bicubic": (28.55, 0.1696),
        "weak": (27.84, 0.1707),
        "standard": (27.58, 0.2126),
        "severe": (23.93, 0.4144),
    },
}
"""Table 1: PSNR-Y (dB) / LPIPS of published real-world SR methods on the DIV2K validation sets."""

PAPER_TABLE2: dict[str, dict[str, tuple[float, float]]] = {
    "SRResNet": {
        "bicubic": (28.05, 0.1747),
        "weak": (27.60, 0.1772),
        "standard": (27.34, 0.2228),
        "severe": (23.71, 0.4419),
    },
    "EDSR": {
        "bicubic": (28.26, 0.1807),
        "weak": (27.79, 0.1834),
        "standard": (27.53, 0.2284),
        "severe": (23.87, 0.4351),
    },
    "SwinIR": {
        "bicubic": (28.28, 0.1488),
        "weak": (27.78, 0.1531),
        "standard": (27.45, 0.1854),
        "severe": (23.60, 0.3869),
    },
    "RRDB": {
        "bicubic": (27.92, 0.1473),
        "weak": (27.84, 0.1569),
        "standard": (27.29, 0.1886),
        "severe": (23.54, 0.3847),
    },
    "DASR": {
        "bicubic": (28.55, 0.1696),
        "weak": (27.84, 0.1707),
        "standard": (27.58, 0.2126),
        "severe": (23.93, 0.4144),
    },
}
"""Table 2: backbones retrained on the DASR degradation space, PSNR-Y (dB) / LPIPS."""

PAPER_TABLE2_EFFICIENCY: dict[str, dict[str, float]] = {
    "SRResNet": {"latency_ms": 113, "gmacs": 166, "params_m": 1.52, "peak_mem_mb": 2359},
    "EDSR": {"latency_ms": 105, "gmacs": 130, "params_m": 1.52, "peak_mem_mb": 2169},
    "SwinIR": {"latency_ms": 1719, "gmacs": 539, "params_m": 11.72, "peak_mem_mb": 2699},
    "RRDB": {"latency_ms": 460, "gmacs": 1176, "params_m": 16.70, "peak_mem_mb": 2417},
    "DASR": {"latency_ms": 142, "gmacs": 184, "params_m": 8.07, "peak_mem_mb": 2452},
}
"""Table 2 efficiency: latency (ms, V100), GMACs at a 256x256 input, params (M), memory (MB)."""


def paper_value(
    table: Mapping[str, Mapping[str, tuple[float, float]]] | None,
    method: str | None,
    level: str,
    metric: str,
) -> float:
    """The paper's PSNR-Y or LPIPS for (method, level) in `table`; NaN when the paper has none."""
    if table is None or method is None or method not in table or level not in table[method]:
        return math.nan
    psnr, lpips_value = table[method][level]
    if metric == METRIC_PSNR:
        return psnr
    if metric == METRIC_LPIPS:
        return lpips_value
    return math.nan


# --------------------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------------------


class MethodKind(str, enum.Enum):
    """How a method's SR is produced."""

    BICUBIC = "bicubic"
    CHECKPOINT = "checkpoint"  # ours: dasrlib.models.load_model
    OFFICIAL_DASR = "official_dasr"  # the reference implementation's net_g + net_p
    THIRD_PARTY = "third_party"  # RRDB/ESRGAN, BSRGAN, Real-ESRGAN, SwinIR via spandrel


@dataclass(frozen=True)
class Method:
    """One SR method: its display name, kind, weight files and its column in the paper's table."""

    name: str
    kind: MethodKind
    weights: tuple[Path, ...] = ()
    paper_name: str | None = None

    def __post_init__(self) -> None:
        expected = {
            MethodKind.BICUBIC: 0,
            MethodKind.CHECKPOINT: 1,
            MethodKind.OFFICIAL_DASR: 2,
            MethodKind.THIRD_PARTY: 1,
        }[self.kind]
        if len(self.weights) != expected:
            raise ValueError(
                f"method {self.name!r} of kind {self.kind.value} needs {expected} weight file(s), "
                f"got {[str(w) for w in self.weights]}"
            )

    @classmethod
    def bicubic(cls, *, name: str = "Bicubic") -> Method:
        """Bicubic x4 interpolation (PyTorch, align_corners=False), clamped to [0, 1]."""
        return cls(name=name, kind=MethodKind.BICUBIC)

    @classmethod
    def checkpoint(
        cls, *, name: str, path: str | os.PathLike[str], paper_name: str | None = None
    ) -> Method:
        """One of our checkpoints (DASR or a backbone), as `dasrlib.models.save_weights` writes."""
        return cls(
            name=name, kind=MethodKind.CHECKPOINT, weights=(Path(path),), paper_name=paper_name
        )

    @classmethod
    def official_dasr(
        cls,
        *,
        name: str = "DASR",
        net_g: str | os.PathLike[str],
        net_p: str | os.PathLike[str],
        paper_name: str | None = "DASR",
    ) -> Method:
        """The official DASR release: generator (experts + weighting) and predictor files."""
        return cls(
            name=name,
            kind=MethodKind.OFFICIAL_DASR,
            weights=(Path(net_g), Path(net_p)),
            paper_name=paper_name,
        )

    @classmethod
    def third_party(
        cls, *, name: str, path: str | os.PathLike[str], paper_name: str | None = None
    ) -> Method:
        """A published x4 checkpoint spandrel recognises (RRDB, BSRGAN, Real-ESRGAN, SwinIR)."""
        return cls(
            name=name, kind=MethodKind.THIRD_PARTY, weights=(Path(path),), paper_name=paper_name
        )


Upscaler = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]
"""lr [1, 3, h, w] in [0, 1] -> (sr [1, 3, 4h, 4w] in [0, 1], v_hat [1, 33] or None)."""


def _bicubic_x4(lr: torch.Tensor) -> tuple[torch.Tensor, None]:
    sr = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False)
    return sr.clamp(0.0, 1.0), None


def _split_output(out: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A network's output as (sr, v_hat): a plain tensor, or DASR's output with .sr and .v_hat."""
    if isinstance(out, torch.Tensor):
        return out, None
    if hasattr(out, "sr"):
        return out.sr, getattr(out, "v_hat", None)
    raise TypeError(f"unexpected network output of type {type(out).__name__}")


def network_upscaler(net: Callable[[torch.Tensor], Any]) -> Upscaler:
    """An `Upscaler` around a network already on its device in eval mode (SR clamped to [0, 1])."""

    def run(lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        sr, v_hat = _split_output(net(lr))
        return sr.float().clamp(0.0, 1.0), v_hat

    return run


def _check_files(method: Method) -> None:
    for path in method.weights:
        if not path.is_file():
            raise FileNotFoundError(f"weights of method {method.name!r} not found at {path}")


def load_upscaler(method: Method, *, device: torch.device) -> Upscaler:
    """Load `method`'s weights onto `device` and return its x4 upscaler (eval mode, no grad)."""
    _check_files(method)
    if method.kind is MethodKind.BICUBIC:
        return _bicubic_x4
    if method.kind is MethodKind.CHECKPOINT:
        net = load_model(method.weights[0], device=device)
    elif method.kind is MethodKind.OFFICIAL_DASR:
        net = import_official_dasr(method.weights[0], method.weights[1])
    else:
        net = load_third_party(method.weights[0])
    net = net.to(device)
    net.eval()
    return network_upscaler(net)


# --------------------------------------------------------------------------------------------------
# Test sets: where the HR images come from, build or reuse
# --------------------------------------------------------------------------------------------------


def _source_images(
    hr_root: str | os.PathLike[str] | None,
) -> tuple[Path | None, list[Path], list[str]]:
    """(folder or None for the embedded photos, files, names) of the HR source."""
    if hr_root is not None:
        folder = project_path(hr_root)
        if not folder.is_dir():
            raise DatasetNotFoundError(f"HR folder {str(folder)!r} does not exist")
        files = list_image_files(folder)
        return folder, files, [f.stem for f in files]
    data_root = project_path(default_data_root())
    try:
        folder = find_dataset_root(data_root, "div2k_valid")
    except DatasetNotFoundError as err:
        logger.info("DIV2K validation not found (%s); using the embedded photos", err)
    else:
        logger.info("using the DIV2K validation images in %s", folder)
        files = list_image_files(folder)
        return folder, files, [f.stem for f in files]
    photos = EmbeddedPhotos()
    return None, list(photos.paths), list(photos.names)


def resolve_eval_hr_root(
    hr_root: str | os.PathLike[str] | None,
    *,
    staging_dir: str | os.PathLike[str],
    max_images: int | None = None,
    crop: int | None = None,
) -> Path:
    """The HR folder to build test sets from.

    `hr_root`: any folder (relative paths from the repository root); None: the DIV2K validation
    images (``DIV2K_valid_HR`` under `dasrlib.data.default_data_root()`) when present, otherwise
    the embedded photos. A folder without `crop` is used as is. The embedded photos (which live
    in several packages) and centre crops (`crop` pixels square, for quick smoke runs; the paper
    uses whole images) are written to `staging_dir`, whose other image files are removed so the
    folder holds exactly this selection (its first `max_images`).
    """
    folder, files, names = _source_images(hr_root)
    if folder is not None and crop is None:
        return folder
    description = "the embedded photos" if folder is None else str(folder)
    if not files:
        raise DatasetNotFoundError(f"no images found in {description}")
    if max_images is not None:
        files, names = files[:max_images], names[:max_images]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"HR images in {description} share the names {twice}; rename them")
    staging = project_path(staging_dir)
    staging.mkdir(parents=True, exist_ok=True)
    written = set()
    for path, name in zip(files, names, strict=True):
        if crop is None:
            target = staging / f"{name}{path.suffix.lower()}"
            with atomic_write(target) as tmp:
                shutil.copyfile(path, tmp)
        else:
            rgb = read_image(path).rgb
            h, w = rgb.shape[-2:]
            side_h, side_w = min(crop, h), min(crop, w)
            top, left = (h - side_h) // 2, (w - side_w) // 2
            target = staging / f"{name}.png"
            write_png(target, rgb[:, top : top + side_h, left : left + side_w])
        written.add(target.name)
    stale = [f for f in list_image_files(staging) if f.name not in written]
    for old in stale:
        old.unlink()
    how = "copied" if crop is None else f"centre-cropped to {crop} px"
    logger.info(
        "%d HR images from %s %s into %s%s",
        len(written),
        description,
        how,
        staging,
        f" ({len(stale)} stale files removed)" if stale else "",
    )
    return staging


@dataclass(frozen=True)
class PreparedTestsets:
    """Where the test sets are and whether they were built now or reused; `message` says which."""

    path: Path
    reused: bool
    message: str


def _selected_images(hr_root: Path, max_images: int | None) -> list[tuple[str, str]]:
    files = list_image_files(hr_root)
    if max_images is not None:
        files = files[:max_images]
    return [(f.stem, hashlib.sha256(f.read_bytes()).hexdigest()) for f in files]


def prepare_testsets(
    hr_root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    levels: Sequence[str],
    seed: int,
    max_images: int | None,
    device: torch.device | str = "cpu",
) -> PreparedTestsets:
    """Build the seeded test sets, or reuse `out_dir`'s if its manifest matches exactly.

    Reused only when the manifest has the same seed, build device type, every requested level,
    and the same images (names and sha256 of the source files, in order); otherwise rebuilt.
    Either way `message` says what happened and why (never a silent skip).
    """
    hr_root, out_dir = project_path(hr_root), project_path(out_dir)
    device = torch.device(device)
    wanted = _selected_images(hr_root, max_images)
    if not wanted:
        raise DatasetNotFoundError(f"no images found under {str(hr_root)!r}")
    reason = "no manifest"
    if (out_dir / MANIFEST_NAME).is_file():
        try:
            manifest = read_testset_manifest(out_dir)
        except ValueError as err:
            manifest, reason = None, f"unreadable manifest ({err})"
        if manifest is not None:
            have = [(i["name"], i["source_sha256"]) for i in manifest.get("images", [])]
            built_on = torch.device(manifest.get("device", "cpu")).type
            if manifest.get("seed") != seed:
                reason = f"seed {manifest.get('seed')} != {seed}"
            elif built_on != device.type:
                reason = f"built on {built_on}, requested {device.type}"
            elif not set(levels) <= set(manifest.get("levels", [])):
                reason = f"levels {manifest.get('levels')} lack some of {list(levels)}"
            elif have != wanted:
                reason = f"images differ ({len(have)} in the manifest, {len(wanted)} requested)"
            else:
                message = (
                    f"reusing the test sets in {out_dir}: the manifest matches seed {seed}, "
                    f"levels {list(levels)} and the {len(wanted)} images of {hr_root}"
                )
                logger.info(message)
                return PreparedTestsets(out_dir, True, message)
    build_testsets(hr_root, out_dir, levels=levels, seed=seed, device=device, max_images=max_images)
    message = (
        f"built the test sets in {out_dir} ({reason} before): seed {seed}, levels {list(levels)}, "
        f"{len(wanted)} images of {hr_root}, on {device.type}"
    )
    logger.info(message)
    return PreparedTestsets(out_dir, False, message)


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------


class EvaluationError(RuntimeError):
    """A method or metric failed on a named image; nothing is dropped from an average silently."""


def _row(
    method: Method,
    dataset: str,
    level: str,
    metric: str,
    value: float,
    n_images: int,
    *,
    paper: Mapping[str, Mapping[str, tuple[float, float]]] | None,
    image: str | None,
    note: str = "",
) -> dict[str, Any]:
    return {
        "method": method.name,
        "dataset": dataset,
        "level": level,
        "metric": metric,
        "value": value,
        "n_images": n_images,
        "paper_value": math.nan
        if image is not None
        else paper_value(paper, method.paper_name, level, metric),
        "image": image if image is not None else "",
        "aggregate": "image" if image is not None else "mean",
        "note": note,
    }


def _as_batch(img: torch.Tensor, device: torch.device) -> torch.Tensor:
    return (img if img.ndim == 4 else img[None]).to(device=device, dtype=torch.float32)


def _measure(
    metric: str,
    name: str,
    level: str,
    fn: Callable[[torch.Tensor, torch.Tensor], float],
    sr: torch.Tensor,
    hr: torch.Tensor,
) -> float:
    try:
        return fn(sr, hr)
    except Exception as err:
        raise EvaluationError(f"{metric} failed on image {name!r} ({level}): {err}") from err


def testset_summary(testset_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """What a results sidecar records about the test sets: source, seed, levels, manifest hash."""
    testset_dir = Path(testset_dir)
    manifest = read_testset_manifest(testset_dir)
    return {
        "dir": str(testset_dir),
        "dataset": manifest.get("dataset"),
        "hr_root": manifest.get("hr_root"),
        "seed": manifest.get("seed"),
        "levels": manifest.get("levels"),
        "n_images": len(manifest.get("images", [])),
        "built_on": manifest.get("device"),
        "manifest_sha256": hashlib.sha256((testset_dir / MANIFEST_NAME).read_bytes()).hexdigest(),
    }


def _dataset_name(testset_dir: Path) -> str:
    manifest = read_testset_manifest(testset_dir)
    return str(manifest.get("dataset") or testset_dir.name)


@torch.inference_mode()
def evaluate(
    method: Method,
    testset_dir: str | os.PathLike[str],
    *,
    levels: Sequence[str] = LEVELS,
    device: torch.device | str,
    lpips: LPIPSMetric | LPIPSUnavailable | None = None,
    out_csv: str | os.PathLike[str] | None = None,
    paper: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
    upscaler: Upscaler | None = None,
) -> pd.DataFrame:
    """PSNR-Y, SSIM-Y, LPIPS (and v_mae for DASR) of `method` on each test set in `levels`.

    Returns long-format rows: per image (`aggregate == "image"`, n_images 1) and the mean per
    (level, metric) (`aggregate == "mean"`, n_images = images averaged). `lpips=None` skips
    LPIPS; `LPIPSUnavailable` gives one mean row per level with NaN and the reason in `note`.
    `paper` is PAPER_TABLE1 or PAPER_TABLE2 (looked up by `method.paper_name`). `upscaler`
    overrides loading `method`'s weights (a model already in memory). With `out_csv` the rows
    are also written with their JSON sidecar.
    """
    device = torch.device(device)
    testset_dir = Path(testset_dir)
    dataset = _dataset_name(testset_dir)
    run = upscaler if upscaler is not None else load_upscaler(method, device=device)
    rows: list[dict[str, Any]] = []
    for level in levels:
        values: dict[str, list[float]] = {}
        v_missing = 0
        names: list[str] = []
        for name, lr, hr, v in load_testset(testset_dir, level):
            names.append(name)
            lr_b = _as_batch(lr, device)
            try:
                sr, v_hat = run(lr_b)
            except Exception as err:
                raise EvaluationError(
                    f"{method.name} failed on image {name!r} ({level}, "
                    f"LR {tuple(lr_b.shape)}): {err}"
                ) from err
            hr_b = _as_batch(hr, torch.device("cpu"))
            if tuple(sr.shape) != tuple(hr_b.shape):
                raise EvaluationError(
                    f"{method.name} returned SR {tuple(sr.shape)} for image {name!r} ({level}) but "
                    f"its HR is {tuple(hr_b.shape)}; test-set HR sides are multiples of 4, so a x4 "
                    "method must match them exactly"
                )
            sr = sr.cpu()
            if not torch.isfinite(sr).all():
                bad = int((~torch.isfinite(sr)).sum())
                raise EvaluationError(
                    f"{method.name} returned {bad} non-finite values for image {name!r} ({level})"
                )
            per_image = {
                METRIC_PSNR: _measure(METRIC_PSNR, name, level, psnr_y, sr, hr_b),
                METRIC_SSIM: _measure(METRIC_SSIM, name, level, ssim_y, sr, hr_b),
            }
            if isinstance(lpips, LPIPSMetric):
                per_image[METRIC_LPIPS] = _measure(METRIC_LPIPS, name, level, lpips, sr, hr_b)
            if v_hat is not None:
                if v is None:
                    v_missing += 1
                else:
                    target = torch.as_tensor(v, dtype=torch.float32).reshape(-1)
                    pred = v_hat.detach().float().cpu().reshape(-1)
                    if pred.shape != target.shape:
                        raise EvaluationError(
                            f"v_hat {tuple(pred.shape)} and manifest v {tuple(target.shape)} of "
                            f"image {name!r} ({level}) differ in length"
                        )
                    per_image[METRIC_V_MAE] = float((pred - target).abs().mean())
            for metric, value in per_image.items():
                values.setdefault(metric, []).append(value)
                rows.append(_row(method, dataset, level, metric, value, 1, paper=paper, image=name))
        if not names:
            raise EvaluationError(f"test set {testset_dir} has no images for level {level!r}")
        for metric, vals in values.items():
            note = ""
            if metric == METRIC_V_MAE and v_missing:
                note = f"manifest has no v for {v_missing} of {len(names)} images"
            mean = sum(vals) / len(vals)
            rows.append(
                _row(
                    method,
                    dataset,
                    level,
                    metric,
                    mean,
                    len(vals),
                    paper=paper,
                    image=None,
                    note=note,
                )
            )
        if isinstance(lpips, LPIPSUnavailable):
            rows.append(
                _row(
                    method,
                    dataset,
                    level,
                    METRIC_LPIPS,
                    math.nan,
                    0,
                    paper=paper,
                    image=None,
                    note=str(lpips),
                )
            )
        logger.info("%s on %s/%s: %d images", method.name, dataset, level, len(names))
    frame = pd.DataFrame(rows, columns=[*RESULT_COLUMNS, "image", "aggregate", "note"])
    if out_csv is not None:
        config = {
            "method": {
                "name": method.name,
                "kind": method.kind.value,
                "weights": [str(w) for w in method.weights],
                "paper_name": method.paper_name,
            },
            "testsets": testset_summary(testset_dir),
            "levels": list(levels),
            "lpips": None if lpips is None else str(getattr(lpips, "alexnet_path", lpips)),
        }
        write_results(frame, out_csv, metadata=run_metadata(config=config, device=device))
    return frame


def not_provided_rows(
    name: str,
    dataset: str,
    *,
    levels: Iterable[str],
    metrics: Iterable[str] = (METRIC_PSNR, METRIC_LPIPS),
    paper: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
    paper_name: str | None = None,
    note: str = NOT_PROVIDED,
) -> pd.DataFrame:
    """Mean rows with NaN values and `note` for a method whose weights were not given."""
    rows = [
        {
            "method": name,
            "dataset": dataset,
            "level": level,
            "metric": metric,
            "value": math.nan,
            "n_images": 0,
            "paper_value": paper_value(paper, paper_name, level, metric),
            "image": "",
            "aggregate": "mean",
            "note": note,
        }
        for level in levels
        for metric in metrics
    ]
    return pd.DataFrame(rows, columns=[*RESULT_COLUMNS, "image", "aggregate", "note"])


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------

_DIGITS = {METRIC_PSNR: 2, METRIC_SSIM: 4, METRIC_LPIPS: 4, METRIC_V_MAE: 4}


def _fmt(value: float, digits: int) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def _cell(row: pd.Series, digits: int) -> str:
    paper = "" if pd.isna(row["paper_value"]) else f"paper {_fmt(row['paper_value'], digits)}"
    if pd.isna(row["value"]):
        reason = str(row["note"]) if row["note"] else "no value"
        return f"{reason}; {paper}" if paper else reason
    ours = f"{_fmt(row['value'], digits)} (n={int(row['n_images'])})"
    if not paper:
        return ours
    diff = row["value"] - row["paper_value"]
    return f"{ours}; {paper}; diff {diff:+.{digits}f}"


def comparison_table(
    frame: pd.DataFrame,
    *,
    metrics: Sequence[str] = (METRIC_PSNR, METRIC_LPIPS),
    levels: Sequence[str] = LEVELS,
    methods: Sequence[str] | None = None,
) -> pd.DataFrame:
    """A wide table of strings: rows (set, metric), one column per method.

    Each cell reads "ours (n=N); paper P; diff D" (D = ours - P), or the reason there is no number
    ("not provided", "n/a: weights not found at ...").
    """
    means = frame[frame["aggregate"] == "mean"]
    methods = list(methods) if methods is not None else list(dict.fromkeys(means["method"]))
    index = pd.MultiIndex.from_tuples(
        [(PAPER_LEVEL_NAMES.get(lv, lv), m) for lv in levels for m in metrics],
        names=["set", "metric"],
    )
    table = pd.DataFrame("", index=index, columns=methods)
    for _, row in means.iterrows():
        if (
            row["metric"] not in metrics
            or row["level"] not in levels
            or row["method"] not in methods
        ):
            continue
        key = (PAPER_LEVEL_NAMES.get(row["level"], row["level"]), row["metric"])
        table.loc[key, row["method"]] = _cell(row, _DIGITS.get(row["metric"], 4))
    table = table.fillna("")
    table[table == ""] = "missing"
    return table


def style_table(table: pd.DataFrame, *, caption: str = "") -> Any:
    """A pandas Styler of a `comparison_table`: cells without a number are greyed."""

    def grey(cell: str) -> str:
        text = str(cell)
        return "color: #888" if text.startswith(("n/a", NOT_PROVIDED, "missing")) else ""

    return table.style.map(grey).set_caption(caption)


# --------------------------------------------------------------------------------------------------
# Tables 1 and 2
# --------------------------------------------------------------------------------------------------

MethodSpec = str | Mapping[str, str] | None
"""How a notebook names a method's weights: None (not provided), "bicubic", a checkpoint path,
or {"net_g": path, "net_p": path} for an official DASR release."""

TABLE1_THIRD_PARTY: frozenset[str] = frozenset(PAPER_TABLE1) - {"DASR"}
"""Table 1 columns whose weights are published checkpoints read through spandrel."""

QUALITY_METRICS: tuple[str, ...] = (METRIC_PSNR, METRIC_LPIPS)
"""The metrics of the paper's tables (SSIM-Y and v_mae are in the CSV too)."""


def method_from_spec(
    name: str,
    spec: MethodSpec,
    *,
    third_party: Iterable[str] = (),
    paper: Mapping[str, Any] | None = None,
) -> Method | None:
    """The `Method` a notebook parameter describes; None when the weights were not provided.

    "bicubic" -> bicubic; {"net_g", "net_p"} -> official DASR; a path -> a third-party checkpoint
    when `name` is in `third_party`, otherwise one of our checkpoints. The paper column is `name`
    when `paper` has it.
    """
    paper_name = name if paper is not None and name in paper else None
    if spec is None:
        return None
    if isinstance(spec, Mapping):
        unknown = set(spec) - {"net_g", "net_p"}
        if unknown or not {"net_g", "net_p"} <= set(spec):
            raise ValueError(
                f"method {name!r}: an official DASR release is {{'net_g': path, 'net_p': path}}, "
                f"got keys {sorted(spec)}"
            )
        return Method.official_dasr(
            name=name,
            net_g=project_path(spec["net_g"]),
            net_p=project_path(spec["net_p"]),
            paper_name=paper_name,
        )
    if str(spec).lower() == "bicubic":
        return Method.bicubic(name=name)
    if name in set(third_party):
        return Method.third_party(name=name, path=project_path(spec), paper_name=paper_name)
    return Method.checkpoint(name=name, path=project_path(spec), paper_name=paper_name)


def evaluate_methods(
    methods: Mapping[str, Method | None],
    testset_dir: str | os.PathLike[str],
    *,
    levels: Sequence[str],
    device: torch.device | str,
    lpips: LPIPSMetric | LPIPSUnavailable | None,
    paper: Mapping[str, Mapping[str, tuple[float, float]]],
    upscalers: Mapping[str, Upscaler] | None = None,
) -> pd.DataFrame:
    """`evaluate` every provided method; the others keep their rows, marked "not provided".

    A method given as None, or whose weight file does not exist (a conventional location the
    user has not filled), gets NaN rows whose note says which.

    `lpips=None` fills the LPIPS cells with "n/a: LPIPS not requested" (the row stays).
    `upscalers` gives, by method name, a model already in memory instead of loading its weights.
    """
    testset_dir = Path(testset_dir)
    dataset = _dataset_name(testset_dir)
    if lpips is None:
        lpips = LPIPSUnavailable("LPIPS not requested")
    frames = []
    for name, method in methods.items():
        absent = (
            None if method is None else next((w for w in method.weights if not w.is_file()), None)
        )
        if method is None or absent is not None:
            note = NOT_PROVIDED if absent is None else f"{NOT_PROVIDED}: no file at {absent}"
            if absent is None:
                logger.info("%s: weights not provided; its cells say %r", name, note)
            else:
                logger.warning("%s: weights not found at %s; its cells say so", name, absent)
            frames.append(
                not_provided_rows(
                    name,
                    dataset,
                    levels=levels,
                    metrics=QUALITY_METRICS,
                    paper=paper,
                    paper_name=name if name in paper else None,
                    note=note,
                )
            )
        else:
            frames.append(
                evaluate(
                    method,
                    testset_dir,
                    levels=levels,
                    device=device,
                    lpips=lpips,
                    paper=paper,
                    upscaler=None if upscalers is None else upscalers.get(name),
                )
            )
    return pd.concat(frames, ignore_index=True)


@dataclass(frozen=True)
class TableResult:
    """What a table run wrote: long rows (CSV), the rendered tables by heading, the file paths."""

    rows: pd.DataFrame
    tables: dict[str, pd.DataFrame]
    csv_path: Path
    markdown_path: Path


def _lpips_description(lpips: LPIPSMetric | LPIPSUnavailable | None) -> str | None:
    if isinstance(lpips, LPIPSMetric):
        return str(lpips.alexnet_path)
    return None if lpips is None else str(lpips)


def write_table(
    rows: pd.DataFrame,
    tables: Mapping[str, pd.DataFrame],
    csv_path: str | os.PathLike[str],
    *,
    title: str,
    notes: Sequence[str],
    metadata: Mapping[str, Any],
) -> TableResult:
    """Write the long rows (CSV + JSON sidecar) and the rendered tables (`<stem>.md`)."""
    csv_path = project_path(csv_path)
    write_results(rows, csv_path, metadata=metadata)
    device = metadata.get("device", {})
    lines = [
        f"# {title}",
        "",
        f"- data: `{csv_path.name}` (long format, per image and means) and `{csv_path.stem}.json`",
        f"- commit: {metadata.get('git_commit')} (dirty: {metadata.get('git_dirty')})",
        f"- device: {device.get('device')} {device.get('gpu_name') or ''}".rstrip(),
        f"- written: {metadata.get('timestamp_utc')}",
        *[f"- {note}" for note in notes],
        "",
    ]
    for heading, table in tables.items():
        lines += [f"## {heading}", "", markdown_table(table), ""]
    markdown_path = csv_path.with_suffix(".md")
    atomic_write_text(markdown_path, "\n".join(lines))
    return TableResult(
        rows=rows, tables=dict(tables), csv_path=csv_path, markdown_path=markdown_path
    )


_QUALITY_NOTE = (
    "cells: ours (n = images averaged); the paper's value; diff = ours - paper. PSNR-Y in dB "
    "(BT.601 Y, 4-pixel crop, 8-bit images), LPIPS AlexNet (RGB in [-1, 1], lower is better)"
)


def table1(
    methods: Mapping[str, MethodSpec],
    testset_dir: str | os.PathLike[str],
    *,
    levels: Sequence[str] = LEVELS,
    device: torch.device | str,
    lpips: LPIPSMetric | LPIPSUnavailable | None,
    out_dir: str | os.PathLike[str],
    config: Mapping[str, Any] | None = None,
) -> TableResult:
    """Table 1: published methods and DASR on the test sets; writes `out_dir/table1.{csv,json,md}`.

    `methods` maps a column name to a `MethodSpec`; names of Table 1's published methods are
    read through spandrel, "DASR" is ours (a path) or the official release (net_g + net_p).
    """
    resolved = {
        name: method_from_spec(name, spec, third_party=TABLE1_THIRD_PARTY, paper=PAPER_TABLE1)
        for name, spec in methods.items()
    }
    rows = evaluate_methods(
        resolved, testset_dir, levels=levels, device=device, lpips=lpips, paper=PAPER_TABLE1
    )
    table = comparison_table(rows, metrics=QUALITY_METRICS, levels=levels, methods=list(methods))
    metadata = run_metadata(
        config={
            **dict(config or {}),
            "methods": {name: _method_record(m) for name, m in resolved.items()},
            "testsets": testset_summary(testset_dir),
            "levels": list(levels),
            "lpips": _lpips_description(lpips),
        },
        seed=read_testset_manifest(testset_dir).get("seed"),
        device=device,
    )
    return write_table(
        rows,
        {"PSNR-Y (dB) and LPIPS": table},
        Path(out_dir) / "table1.csv",
        title="Table 1: real-world SR methods on the synthetic test sets",
        notes=[_QUALITY_NOTE],
        metadata=metadata,
    )


def _method_record(method: Method | None) -> dict[str, Any] | None:
    if method is None:
        return None
    return {
        "kind": method.kind.value,
        "weights": [str(w) for w in method.weights],
        "paper_name": method.paper_name,
    }


# --------------------------------------------------------------------------------------------------
# Table 2: backbones retrained with one budget, and their cost
# --------------------------------------------------------------------------------------------------

TABLE2_TRAINING: dict[str, dict[str, str]] = {
    "SRResNet": {"stage": "baseline", "backbone": "srresnet"},
    "EDSR": {"stage": "baseline", "backbone": "edsr"},
    "RRDB": {"stage": "baseline", "backbone": "rrdb"},
    "SwinIR": {"stage": "baseline", "backbone": "swinir"},
    "DASR": {"stage": "dasr", "backbone": "srresnet"},
}
"""How each Table 2 column is trained (`TrainConfig` stage and backbone). DASR's experts start
from an SRResNet pretrained with the pixel loss (Sec. 4.1), its own run before the DASR run."""

EFFICIENCY_METRICS: tuple[tuple[str, str, str], ...] = (
    ("params_m", "params_m", "parameters (M), all experts of DASR"),
    ("gmacs_256", "gmacs", "GMACs of one 256x256 LR input (inference path)"),
    ("latency_ms", "latency_ms", "median latency (ms), fp32, batch 1"),
    ("peak_mem_mb", "peak_mem_mb", "peak GPU memory (MB) of the latency runs"),
)
"""(metric name in the CSV, key of PAPER_TABLE2_EFFICIENCY, meaning)."""

EFFICIENCY_REFERENCE = "SRResNet"
"""Efficiency ratios divide by this column (the paper's timings are on a V100, ours are not)."""


@dataclass(frozen=True)
class TrainedRun:
    """A Table 2 network: its run folder, and whether it was trained now or loaded."""

    name: str
    run_dir: Path
    reused: bool
    message: str

    @property
    def weights(self) -> Path:
        """The exported EMA generator (`dasrlib.models.load_model` reads it)."""
        return self.run_dir / "model.safetensors"


def _run_name(prefix: str, values: Mapping[str, Any]) -> str:
    """`prefix` + the hash of the fields a resume must keep (not iterations, device, outputs)."""
    return f"{prefix}_{resume_hash(load_config(TrainConfig, {**values, 'name': prefix}))[:8]}"


def table2_configs(
    budget: Mapping[str, Any],
    *,
    methods: Sequence[str] = tuple(TABLE2_TRAINING),
    dasr_pretrain_iterations: int,
) -> dict[str, list[TrainConfig]]:
    """The training runs of Table 2: one shared budget (`TrainConfig` fields) for every network.

    Returns, per method, its stage configs in order (DASR: the SRResNet pretrain, then DASR
    initialised from it). Run names carry `dasrlib.train.resume_hash` of the config, so a run
    with other data, model or loss settings never resumes or overwrites this one, while more
    iterations (or another device) continue the same run from its checkpoint.
    """
    for key in ("name", "stage", "backbone", "init_from"):
        if key in budget:
            raise ValueError(f"budget sets {key!r}; Table 2 chooses it per method")
    unknown = [m for m in methods if m not in TABLE2_TRAINING]
    if unknown:
        raise ValueError(f"unknown Table 2 methods {unknown}; expected {list(TABLE2_TRAINING)}")
    out_dir = str(budget.get("out_dir", TrainConfig().out_dir))
    configs: dict[str, list[TrainConfig]] = {}
    for method in methods:
        values = {**budget, **TABLE2_TRAINING[method]}
        stages = []
        if method == "DASR":
            pretrain = {
                **budget,
                "stage": "pretrain",
                "backbone": "srresnet",
                "iterations": dasr_pretrain_iterations,
            }
            name = _run_name("table2_dasr_pretrain", pretrain)
            stages.append(load_config(TrainConfig, {**pretrain, "name": name}))
            values["init_from"] = f"{out_dir}/{name}"
        name = _run_name(f"table2_{method.lower()}", values)
        stages.append(load_config(TrainConfig, {**values, "name": name}))
        configs[method] = stages
    return configs


def train_or_load(config: TrainConfig) -> TrainedRun:
    """Train `config`, or load its run when `run.json` says it finished with the same config hash.

    Anything else (no run, another hash, an unfinished run) calls `train`, which resumes from the
    run's checkpoint when there is one. `message` says which happened and why.
    """
    run_dir = project_path(config.out_dir) / config.name
    wanted = config_hash(config)
    record_path = run_dir / "run.json"
    reason = "no run yet"
    if record_path.is_file():
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if record.get("config_hash") != wanted:
            reason = f"run.json has config hash {record.get('config_hash')}, wanted {wanted}"
        elif record.get("status") != "finished":
            reason = f"the run's status is {record.get('status')!r}"
        elif not (run_dir / "model.safetensors").is_file():
            reason = "model.safetensors is missing"
        else:
            message = f"{config.name}: loaded (finished run with config hash {wanted})"
            logger.info(message)
            return TrainedRun(config.name, run_dir, True, message)
    started = time.monotonic()
    trained_dir = train(config)
    record = json.loads((project_path(trained_dir) / "run.json").read_text(encoding="utf-8"))
    message = (
        f"{config.name}: trained ({reason}): {record.get('iterations_this_call')} iterations "
        f"this call, {record.get('iteration')} in all, {time.monotonic() - started:.1f} s"
    )
    logger.info(message)
    return TrainedRun(config.name, project_path(trained_dir), False, message)


def efficiency_rows(
    models: Mapping[str, nn.Module],
    *,
    device: torch.device | str,
    latency_size: int | Sequence[int],
    repeats: int,
    warmup: int,
) -> pd.DataFrame:
    """Table 2's cost rows measured here: parameters, GMACs at 256x256, latency, peak memory.

    GMACs are counted on a `meta` copy at 256x256 (as the paper; no compute). Latency and peak
    memory are measured on `device` at `latency_size` (paper: the DIV2K validation LR inputs,
    mostly 339x510; peak memory only on CUDA). Each metric also gets a `<metric>_vs_srresnet`
    row: ours / ours of SRResNet beside the paper's ratio, the comparable number across devices.
    """
    device = torch.device(device)
    size = (
        (int(latency_size), int(latency_size))
        if isinstance(latency_size, int)
        else (int(latency_size[0]), int(latency_size[1]))
    )
    measured: dict[str, dict[str, float]] = {}
    notes: dict[str, str] = {}
    for name, model in models.items():
        gmacs_256 = count_gmacs(copy.deepcopy(model).to("meta"), size=256)
        profile = profile_model(
            model, size=size, device=device, precision="fp32", repeats=repeats, warmup=warmup
        )
        peak = profile["peak_mem_mb"]
        measured[name] = {
            "params_m": float(profile["params_m"]),
            "gmacs_256": gmacs_256,
            "latency_ms": float(profile["latency_ms"]),
            "peak_mem_mb": math.nan if peak is None else float(peak),
        }
        where = profile.get("device_name") or str(profile["device"])
        notes[name] = f"measured on {where} at LR {size[0]}x{size[1]}"
    rows = []
    reference = measured.get(EFFICIENCY_REFERENCE)
    paper_ref = PAPER_TABLE2_EFFICIENCY[EFFICIENCY_REFERENCE]
    for name, values in measured.items():
        paper = PAPER_TABLE2_EFFICIENCY.get(name)
        for metric, paper_key, _ in EFFICIENCY_METRICS:
            value = values[metric]
            note = notes[name] if metric in ("latency_ms", "peak_mem_mb") else ""
            if metric == "peak_mem_mb" and math.isnan(value):
                note = f"n/a: peak memory is measured on CUDA only (ran on {device.type})"
            base = {
                "method": name,
                "dataset": "efficiency",
                "level": "",
                "image": "",
                "aggregate": "mean",
            }
            rows.append(
                {
                    **base,
                    "metric": metric,
                    "value": value,
                    "n_images": 1,
                    "paper_value": math.nan if paper is None else float(paper[paper_key]),
                    "note": note,
                }
            )
            ratio = math.nan if reference is None else value / reference[metric]
            rows.append(
                {
                    **base,
                    "metric": f"{metric}_vs_srresnet",
                    "value": ratio,
                    "n_images": 1,
                    "paper_value": math.nan
                    if paper is None
                    else float(paper[paper_key]) / float(paper_ref[paper_key]),
                    "note": "" if reference is not None else "n/a: SRResNet not measured",
                }
            )
    return pd.DataFrame(rows, columns=[*RESULT_COLUMNS, "image", "aggregate", "note"])


def efficiency_table(rows: pd.DataFrame, *, methods: Sequence[str]) -> pd.DataFrame:
    """Rows: cost metrics; columns: methods; cells "ours (x r); paper V100 P (x r)"."""
    eff = rows[rows["dataset"] == "efficiency"]
    labels = [label for _, _, label in EFFICIENCY_METRICS]
    table = pd.DataFrame("", index=pd.Index(labels, name="cost"), columns=list(methods))
    for metric, _, label in EFFICIENCY_METRICS:
        for method in methods:
            own = eff[(eff["method"] == method) & (eff["metric"] == metric)]
            ratio = eff[(eff["method"] == method) & (eff["metric"] == f"{metric}_vs_srresnet")]
            if own.empty:
                table.loc[label, method] = "not measured"
                continue
            value, note = own["value"].iloc[0], own["note"].iloc[0]
            r = ratio["value"].iloc[0]
            ours = note if pd.isna(value) else f"{value:.2f} (x{r:.2f})"
            paper = own["paper_value"].iloc[0]
            if not pd.isna(paper):
                paper_r = ratio["paper_value"].iloc[0]
                ours += (
                    f"; paper{' V100' if metric == 'latency_ms' else ''} {paper:g} (x{paper_r:.2f})"
                )
            table.loc[label, method] = ours
    return table


def table2(
    runs: Mapping[str, TrainedRun | None],
    testset_dir: str | os.PathLike[str],
    *,
    levels: Sequence[str] = LEVELS,
    device: torch.device | str,
    lpips: LPIPSMetric | LPIPSUnavailable | None,
    out_dir: str | os.PathLike[str],
    latency_size: int | Sequence[int] = (339, 510),
    latency_repeats: int = 20,
    latency_warmup: int = 5,
    config: Mapping[str, Any] | None = None,
) -> TableResult:
    """Table 2: the retrained networks on the test sets, then their cost measured here.

    `runs` maps a Table 2 column to its trained run (None: not provided). Writes
    `out_dir/table2.{csv,json,md}`: quality rows as Table 1, then the efficiency rows.
    """
    device = torch.device(device)
    methods = {
        name: None
        if run is None
        else Method.checkpoint(name=name, path=run.weights, paper_name=name)
        for name, run in runs.items()
    }
    models = {
        name: load_model(run.weights, device=device)
        for name, run in runs.items()
        if run is not None
    }
    quality = evaluate_methods(
        methods,
        testset_dir,
        levels=levels,
        device=device,
        lpips=lpips,
        paper=PAPER_TABLE2,
        upscalers={name: network_upscaler(model) for name, model in models.items()},
    )
    costs = efficiency_rows(
        models,
        device=device,
        latency_size=latency_size,
        repeats=latency_repeats,
        warmup=latency_warmup,
    )
    rows = pd.concat([quality, costs], ignore_index=True)
    names = list(runs)
    tables = {
        "PSNR-Y (dB) and LPIPS": comparison_table(
            quality, metrics=QUALITY_METRICS, levels=levels, methods=names
        ),
        "Cost (measured on this device; ratios to SRResNet beside the paper's)": (
            efficiency_table(rows, methods=names)
        ),
    }
    metadata = run_metadata(
        config={
            **dict(config or {}),
            "runs": {
                name: None
                if run is None
                else {"run_dir": str(run.run_dir), "reused": run.reused, "message": run.message}
                for name, run in runs.items()
            },
            "testsets": testset_summary(testset_dir),
            "levels": list(levels),
            "lpips": _lpips_description(lpips),
            "latency_size": list(latency_size)
            if not isinstance(latency_size, int)
            else [latency_size, latency_size],
            "latency_repeats": latency_repeats,
        },
        seed=read_testset_manifest(testset_dir).get("seed"),
        device=device,
    )
    return write_table(
        rows,
        tables,
        Path(out_dir) / "table2.csv",
        title="Table 2: backbones retrained on the DASR degradation space",
        notes=[
            _QUALITY_NOTE,
            "cost: GMACs at a 256x256 LR input; latency and memory on this device (the paper's "
            "are a V100's), so compare the ratios to SRResNet",
        ],
        metadata=metadata,
    )
