"""Which model to super-resolve with: a given checkpoint, the official release, the project's
trained DASR where it is published (`default_model_path`), or the newest local training run.

`choose_model` is the one rule the ``dasr`` command and the slider notebook / app share; it says
which model it took and why (`ModelChoice.describe`). `load_sr_model` loads one given file;
`dasrlib.models.checkpoints` reads the files.
"""

from __future__ import annotations

import enum
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dasrlib.device import resolve_device
from dasrlib.models.checkpoints import (
    CheckpointError,
    import_official_dasr,
    load_model,
    load_third_party,
    read_metadata,
)
from dasrlib.models.dasr import DASR

__all__ = [
    "DEFAULT_MODEL_RELATIVE_PATH",
    "LOCAL_RUNS_RELATIVE_PATH",
    "MODEL_ROOT_ENV",
    "ModelChoice",
    "ModelKind",
    "ModelNotFoundError",
    "choose_model",
    "default_model_path",
    "is_dasr",
    "load_sr_model",
    "newest_run_model",
]

logger = logging.getLogger(__name__)

DEFAULT_MODEL_RELATIVE_PATH = Path("results/models/dasr/model.safetensors")
"""Where the project's trained DASR checkpoint is published (relative to the repository)."""

LOCAL_RUNS_RELATIVE_PATH = Path("results/runs")
"""Where training writes its run folders, ``<name>/model.safetensors`` (``out_dir``'s default)."""

MODEL_ROOT_ENV = "DASR_MODEL_ROOT"
"""Environment variable naming the folder searched for `DEFAULT_MODEL_RELATIVE_PATH` instead of
the repository this package lives in (the current directory is searched after it either way)."""


class ModelNotFoundError(FileNotFoundError):
    """No model was given and no trained checkpoint exists where the project publishes it."""


def _model_root() -> Path:
    configured = os.environ.get(MODEL_ROOT_ENV)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parent.parent.parent


def _search_roots() -> list[Path]:
    """The repository (or `MODEL_ROOT_ENV`), then the current directory when it is another one."""
    roots = [_model_root()]
    if Path.cwd().resolve() != roots[0].resolve():
        roots.append(Path.cwd())
    return roots


def default_model_path() -> Path:
    """The project's trained DASR checkpoint (``results/models/dasr/model.safetensors``).

    Looked for under the repository this package lives in (or the folder `MODEL_ROOT_ENV`
    names), then under the current directory. Raises `ModelNotFoundError` naming where it
    looked and how to get a model.
    """
    candidates = [root / DEFAULT_MODEL_RELATIVE_PATH for root in _search_roots()]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ModelNotFoundError(
        f"no DASR model given and none published (looked for {candidates[0]}). Get one by "
        "(1) training it: `make demo` or notebooks/train.ipynb write "
        f"{LOCAL_RUNS_RELATIVE_PATH}/<name>/model.safetensors, which is used when nothing is "
        f"published; the training campaign (docs/campaign.md) publishes "
        f"{DEFAULT_MODEL_RELATIVE_PATH}; (2) passing a checkpoint of this project "
        "(--model PATH / model_path=...), or (3) passing the official DASR release files "
        "net_g and net_p (--official NET_G NET_P / official_paths=(...)), downloaded from the "
        "authors' repository (github.com/csjliang/DASR) on a machine with network access."
    )


def is_dasr(model: object) -> bool:
    """True for a degradation-adaptive model (has ``predict_degradation``, ``expert_weights``,
    ``fuse``), False for a plain SR network."""
    return all(hasattr(model, name) for name in ("predict_degradation", "expert_weights", "fuse"))


def newest_run_model(runs_dir: str | os.PathLike[str]) -> Path | None:
    """The newest ``<runs_dir>/<name>/model.safetensors`` (by modification time) whose recorded
    architecture is DASR (baseline runs such as SRResNet or EDSR are skipped), or None."""
    candidates = sorted(
        Path(runs_dir).glob("*/model.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True
    )
    for candidate in candidates:
        try:
            architecture = read_metadata(candidate)["architecture"]
        except CheckpointError as error:
            logger.warning("skipping %s: %s", candidate, error)
            continue
        if isinstance(architecture, dict) and architecture.get("name") == "dasr":
            return candidate
    return None


class ModelKind(enum.Enum):
    """Where `choose_model` found the model, in the order it looks."""

    GIVEN = "the given checkpoint"
    OFFICIAL = "the official DASR release"
    PUBLISHED = "the project's published model"
    LOCAL_RUN = "the newest local training run (nothing is published)"
    RANDOM = "a random-weight stand-in (no trained model found)"


@dataclass(frozen=True)
class ModelChoice:
    """The model to run, the file(s) it came from (``source``) and why it was taken (``kind``)."""

    model: nn.Module
    source: str
    kind: ModelKind

    @property
    def random(self) -> bool:
        """A random-weight stand-in: its results mean nothing."""
        return self.kind is ModelKind.RANDOM

    @property
    def local_run(self) -> bool:
        return self.kind is ModelKind.LOCAL_RUN

    @property
    def adaptive(self) -> bool:
        """Degradation-adaptive (DASR): predicts v, so editing it (``--set``, sliders) acts."""
        return is_dasr(self.model)

    def describe(self) -> str:
        """One line: which model, why, and (for a plain SR network) that it is not adaptive."""
        line = f"{self.source} ({self.kind.value})"
        if not self.adaptive:
            name = type(self.model).__name__
            line += f"; {name} is not degradation-adaptive: it predicts no degradation"
        return line


def choose_model(
    model_path: str | os.PathLike[str] | None = None,
    *,
    official_paths: Sequence[str | os.PathLike[str]] | None = None,
    device: str | torch.device = "cpu",
    runs_dirs: Sequence[str | os.PathLike[str]] | None = None,
    allow_random: bool = False,
    seed: int = 0,
) -> ModelChoice:
    """The model to super-resolve with, by one rule for every caller: ``model_path``, else the
    official files (net_g, net_p), else the published checkpoint (`default_model_path`), else the
    newest local DASR run (`newest_run_model`) in ``runs_dirs`` (default: `LOCAL_RUNS_RELATIVE_PATH`
    under the repository, then under the current directory), else, with ``allow_random``, a small
    random-weight DASR flagged as such; otherwise `ModelNotFoundError` saying how to get one."""
    target = resolve_device(device)
    if official_paths is not None:
        if len(official_paths) != 2:
            raise ValueError(f"official_paths must be [net_g, net_p], got {official_paths!r}")
        net_g, net_p = official_paths
        model = load_sr_model(model_path, official_paths=(net_g, net_p), device=target)
        return ModelChoice(model, f"{net_g} + {net_p}", ModelKind.OFFICIAL)
    if model_path is not None:
        model = load_sr_model(model_path, device=target)
        return ModelChoice(model, str(model_path), ModelKind.GIVEN)
    try:
        path = default_model_path()
    except ModelNotFoundError:
        if runs_dirs is None:
            runs_dirs = [root / LOCAL_RUNS_RELATIVE_PATH for root in _search_roots()]
        for runs_dir in runs_dirs:
            run = newest_run_model(runs_dir)
            if run is not None:
                return ModelChoice(load_sr_model(run, device=target), str(run), ModelKind.LOCAL_RUN)
        if not allow_random:
            raise
        generator = torch.Generator().manual_seed(seed)
        model = DASR(num_feat=16, num_block=4, predictor_feat=16, generator=generator)
        return ModelChoice(model.to(target).eval(), "random weights", ModelKind.RANDOM)
    return ModelChoice(load_sr_model(path, device=target), str(path), ModelKind.PUBLISHED)


def load_sr_model(
    model_path: str | os.PathLike[str] | None = None,
    *,
    official_paths: tuple[str | os.PathLike[str], str | os.PathLike[str]] | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """The model to super-resolve with, on ``device``, in eval mode.

    ``model_path``: a checkpoint of this project (safetensors written by
    `dasrlib.models.checkpoints.save_weights`, rebuilt from its recorded architecture), or any other
    SR checkpoint spandrel recognises (ESRGAN, Real-ESRGAN, SwinIR, ...). ``official_paths``: the
    official DASR release files (net_g, net_p). Neither: the project's trained checkpoint
    (`default_model_path`), else `ModelNotFoundError` saying how to get one.
    """
    target = resolve_device(device)
    if model_path is not None and official_paths is not None:
        raise ValueError("give either model_path or official_paths, not both")
    if official_paths is not None:
        net_g, net_p = official_paths
        return import_official_dasr(net_g, net_p).to(target).eval()
    path = Path(model_path) if model_path is not None else default_model_path()
    if path.suffix == ".safetensors" and read_metadata(path)["architecture"] is not None:
        return load_model(path, target)
    return load_third_party(path, scale=None).to(target).eval()
