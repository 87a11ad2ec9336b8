"""Which model to super-resolve with: a given checkpoint, the official release, or the project's
trained DASR where it is published (`default_model_path`).

`load_sr_model` is what the ``dasr`` command, the interactive notebook and `dasrlib.inference`
callers use; `dasrlib.models.checkpoints` reads the files.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from dasrlib.device import resolve_device
from dasrlib.models.checkpoints import (
    import_official_dasr,
    load_model,
    load_third_party,
    read_metadata,
)

__all__ = [
    "DEFAULT_MODEL_RELATIVE_PATH",
    "MODEL_ROOT_ENV",
    "ModelNotFoundError",
    "default_model_path",
    "load_sr_model",
]

DEFAULT_MODEL_RELATIVE_PATH = Path("results/models/dasr/model.safetensors")
"""Where the project's trained DASR checkpoint is published (relative to the repository)."""

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


def default_model_path() -> Path:
    """The project's trained DASR checkpoint (``results/models/dasr/model.safetensors``).

    Looked for under the repository this package lives in (or the folder `MODEL_ROOT_ENV`
    names), then under the current directory. Raises `ModelNotFoundError` naming where it
    looked and how to get a model.
    """
    candidates = [_model_root() / DEFAULT_MODEL_RELATIVE_PATH]
    cwd_candidate = Path.cwd() / DEFAULT_MODEL_RELATIVE_PATH
    if cwd_candidate.resolve() != candidates[0].resolve():
        candidates.append(cwd_candidate)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise ModelNotFoundError(
        f"no DASR model given and no trained checkpoint found (looked for {looked}). Get one by "
        "(1) training it with the library (notebooks/train.ipynb; the published checkpoint lands "
        f"in {DEFAULT_MODEL_RELATIVE_PATH}), (2) passing a checkpoint of this project "
        "(--model PATH / model_path=...), or (3) passing the official DASR release files "
        "net_g and net_p (--official NET_G NET_P / official_paths=(...)), downloaded from the "
        "authors' repository (github.com/csjliang/DASR) on a machine with network access."
    )


def load_sr_model(
    model_path: str | os.PathLike[str] | None = None,
    *,
    official_paths: tuple[str | os.PathLike[str], str | os.PathLike[str]] | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """The model to super-resolve with, on ``device``, in eval mode.

    ``model_path``: a checkpoint of this project (safetensors written by
    `dasrlib.models.save_weights`, rebuilt from its recorded architecture), or any other SR
    checkpoint spandrel recognises (ESRGAN, Real-ESRGAN, SwinIR, ...). ``official_paths``: the
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
