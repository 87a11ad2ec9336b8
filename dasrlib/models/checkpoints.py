"""Checkpoints: safetensors save/load, ``.pth`` reading, official DASR import, third-party models.

- `save_weights` writes a safetensors file atomically; its metadata holds the model's architecture
  (name and constructor options, JSON) so `load_model` can rebuild the model from the file alone.
- `load_weights` reads ``.safetensors`` or ``.pth``/``.pt`` (``torch.load(weights_only=True)``;
  BasicSR's ``params_ema``/``params`` and ``state_dict`` wrappers are unwrapped) and names the
  file and the missing, unexpected or misshaped keys when they do not fit.
- `import_official_dasr` converts the reference implementation's ``net_g`` (``MSRResNetDynamic``:
  every conv weight stacked [N, out, in, k, k], bias [N, out]) and ``net_p``
  (``Degradation_Predictor``: ``ConvNet.*`` = P, ``MappingNet.*`` = A) into a `DASR`.
- `load_third_party` loads ESRGAN, BSRGAN, Real-ESRGAN, SwinIR, ... through spandrel.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from dasrlib.io import atomic_write
from dasrlib.models.build import build_model
from dasrlib.models.dasr import DASR
from dasrlib.models.mixed import ExpertBank

__all__ = [
    "CheckpointError",
    "import_official_dasr",
    "load_model",
    "load_third_party",
    "load_weights",
    "read_metadata",
    "read_state_dict",
    "save_weights",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
_ARCH_KEY = "dasrlib.architecture"
_META_KEY = "dasrlib.metadata"
_WRAPPERS_EMA_FIRST = ("params_ema", "params", "state_dict")
_WRAPPERS_RAW_FIRST = ("params", "params_ema", "state_dict")
_MAX_LISTED = 12


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit the model; names the file."""


def save_weights(
    model: nn.Module,
    path: PathLike,
    *,
    dtype: torch.dtype | None = None,
    metadata: dict[str, object] | None = None,
) -> Path:
    """Write ``model.state_dict()`` to a safetensors file atomically; returns the path.

    ``dtype`` casts floating-point tensors (e.g. ``torch.float16`` for a release file).
    ``metadata`` (JSON-serialisable) is stored beside the model's ``architecture``.
    """
    tensors: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        tensor = value.detach().to("cpu")
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        tensors[key] = tensor.contiguous().clone()
    header = {"format": "pt", _META_KEY: json.dumps(metadata or {}, sort_keys=True)}
    architecture = getattr(model, "architecture", None)
    if architecture is not None:
        header[_ARCH_KEY] = json.dumps(architecture, sort_keys=True)
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return Path(path)


def read_metadata(path: PathLike) -> dict[str, object]:
    """``{"architecture": {...} | None, "metadata": {...}}`` of a file written by `save_weights`."""
    file = _existing(path)
    if file.suffix != ".safetensors":
        raise CheckpointError(f"{file}: only .safetensors files carry metadata")
    try:
        with safe_open(str(file), framework="pt") as handle:
            header = handle.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{file}: {_safetensors_problem(file, error)}") from error
    try:
        architecture = json.loads(header[_ARCH_KEY]) if _ARCH_KEY in header else None
        metadata = json.loads(header.get(_META_KEY, "{}"))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{file}: metadata is not valid JSON ({error})") from error
    return {"architecture": architecture, "metadata": metadata}


def read_state_dict(path: PathLike, *, prefer_ema: bool = True) -> dict[str, Tensor]:
    """The tensors of a ``.safetensors`` or ``.pth``/``.pt``/``.ckpt`` file (on CPU).

    Wrapped state dicts are unwrapped: ``params_ema`` / ``params`` (BasicSR; ``prefer_ema``
    decides which comes first when both exist) and ``state_dict``; a ``module.`` prefix on every
    key (DistributedDataParallel) is removed. A file that is empty, truncated or not a checkpoint,
    or whose weights hold NaN or Inf, raises `CheckpointError` naming the file and the problem.
    """
    file = _existing(path)
    suffix = file.suffix.lower()
    if suffix == ".safetensors":
        try:
            state: object = load_file(str(file), device="cpu")
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"{file}: {_safetensors_problem(file, error)}") from error
    elif suffix in (".pth", ".pt", ".ckpt"):
        try:
            state = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as error:  # unpickling errors have many types
            raise CheckpointError(
                f"{file}: cannot be read as a weights-only torch file: {error}"
            ) from error
    else:
        raise CheckpointError(
            f"{file}: unknown checkpoint type {suffix!r}; expected .safetensors or .pth"
        )
    wrappers = _WRAPPERS_EMA_FIRST if prefer_ema else _WRAPPERS_RAW_FIRST
    while isinstance(state, dict) and not _is_tensor_dict(state):
        key = next((name for name in wrappers if name in state), None)
        if key is None:
            raise CheckpointError(
                f"{file}: no state dict found (top-level keys: {sorted(state)[:_MAX_LISTED]})"
            )
        state = state[key]
    if not isinstance(state, dict):
        raise CheckpointError(f"{file}: holds {type(state).__name__}, not a state dict")
    if state and all(key.startswith("module.") for key in state):
        state = {key[len("module.") :]: value for key, value in state.items()}
    _check_finite(state, file)
    return state


def _safetensors_problem(file: Path, error: Exception) -> str:
    """What is wrong with a safetensors file the library refused, in words."""
    if isinstance(error, PermissionError) or "permission denied" in str(error).lower():
        return "permission denied (the file is not readable)"
    size = file.stat().st_size if file.is_file() else 0
    if size == 0:
        return "file is empty (0 bytes); not a safetensors checkpoint"
    return f"not a readable safetensors file ({size} bytes; truncated or corrupt: {error})"


def _check_finite(state: dict[str, Tensor], file: Path) -> None:
    """Raise `CheckpointError` naming the tensors of `state` that hold NaN or Inf."""
    bad = [
        key
        for key, value in state.items()
        if isinstance(value, Tensor)
        and value.is_floating_point()
        and not bool(torch.isfinite(value).all())
    ]
    if bad:
        raise CheckpointError(
            f"{file}: {len(bad)} tensor(s) hold NaN or Inf values {_listing(bad)}; "
            "the weights are unusable (a diverged run?)"
        )


def load_weights(model: nn.Module, path: PathLike, *, prefer_ema: bool = True) -> nn.Module:
    """Load a file's weights into ``model`` (strict: every key, every shape); returns ``model``."""
    state = read_state_dict(path, prefer_ema=prefer_ema)
    check_state_dict(model.state_dict(), state, source=Path(path))
    model.load_state_dict(state)
    return model


def load_model(path: PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model recorded in a `save_weights` file, load its weights, eval mode."""
    architecture = read_metadata(path)["architecture"]
    if not isinstance(architecture, dict) or "name" not in architecture:
        raise CheckpointError(
            f"{path}: no architecture in the file's metadata; build the model yourself and use "
            "load_weights(model, path)"
        )
    model = build_model(architecture["name"], **architecture.get("options", {}))
    load_weights(model, path)
    return model.to(device).eval()


def check_state_dict(
    expected: dict[str, Tensor], found: dict[str, Tensor], *, source: PathLike
) -> None:
    """Raise `CheckpointError` naming ``source`` and the missing/unexpected/misshaped keys."""
    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    misshaped = [
        f"{key}: file {tuple(found[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in expected
        if key in found and tuple(found[key].shape) != tuple(expected[key].shape)
    ]
    if missing or unexpected or misshaped:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected)):
            if items:
                parts.append(f"{len(items)} {label} keys {_listing(items)}")
        if misshaped:
            parts.append(f"{len(misshaped)} shape mismatches {_listing(misshaped)}")
        raise CheckpointError(f"{source}: does not fit the model: " + "; ".join(parts))


def import_official_dasr(
    net_g_path: PathLike, net_p_path: PathLike, *, prefer_ema: bool = True
) -> DASR:
    """Build a `DASR` from the reference implementation's ``net_g`` and ``net_p`` files.

    ``net_g``: ``MSRResNetDynamic`` (``conv_first``, ``body.i.conv1/conv2``, ``upconv1``,
    [``upconv2``], ``conv_hr``, ``conv_last``; weights [N, out, in, k, k], biases [N, out]).
    ``net_p``: ``Degradation_Predictor`` (``ConvNet.{0,2,...,10}`` = P, ``MappingNet.{0,1}`` = A).
    Either file may wrap its tensors in ``params`` or ``params_ema`` (``prefer_ema`` picks).
    """
    g_state = read_state_dict(net_g_path, prefer_ema=prefer_ema)
    p_state = read_state_dict(net_p_path, prefer_ema=prefer_ema)
    first = _require(g_state, "conv_first.weight", net_g_path, ndim=5)
    num_experts, num_feat, in_channels = first.shape[:3]
    if in_channels != 3:
        raise CheckpointError(f"{net_g_path}: conv_first takes {in_channels} channels, not RGB")
    blocks = {int(m.group(1)) for key in g_state if (m := re.match(r"body\.(\d+)\.", key))}
    if "upconv2.weight" in g_state:
        scale = 4
    else:
        up = _require(g_state, "upconv1.weight", net_g_path, ndim=5)
        scale = round((up.shape[1] / num_feat) ** 0.5)
    conv0 = _require(p_state, "ConvNet.0.weight", net_p_path, ndim=4)
    last = _require(p_state, "ConvNet.10.weight", net_p_path, ndim=4)
    mapping = _require(p_state, "MappingNet.1.weight", net_p_path, ndim=2)
    if mapping.shape[0] != num_experts:
        raise CheckpointError(
            f"{net_p_path}: MappingNet gives {mapping.shape[0]} weights but {net_g_path} holds "
            f"{num_experts} experts"
        )
    model = DASR(
        num_experts=num_experts,
        num_feat=num_feat,
        num_block=len(blocks),
        scale=scale,
        v_dim=last.shape[0],
        predictor_feat=conv0.shape[0],
        predictor_bias="ConvNet.2.bias" in p_state,
    )
    assert isinstance(model.experts, ExpertBank)
    expected = {}
    for slot in model.experts.layout:
        expected[f"{slot.name}.weight"] = torch.empty(num_experts, *slot.weight_shape)
        if slot.bias_offset is not None:
            expected[f"{slot.name}.bias"] = torch.empty(num_experts, slot.out_channels)
    check_state_dict(expected, g_state, source=net_g_path)
    rows = []
    for slot in model.experts.layout:
        rows.append(g_state[f"{slot.name}.weight"].reshape(num_experts, -1))
        if slot.bias_offset is not None:
            rows.append(g_state[f"{slot.name}.bias"].reshape(num_experts, -1))
    with torch.no_grad():
        model.experts.bank.copy_(torch.cat(rows, dim=1))
    predictor_state = {k: v for k, v in p_state.items() if k.startswith("ConvNet.")}
    weighting_state = {k: v for k, v in p_state.items() if k.startswith("MappingNet.")}
    others = sorted(set(p_state) - set(predictor_state) - set(weighting_state))
    if others:
        raise CheckpointError(f"{net_p_path}: unexpected keys {_listing(others)}")
    check_state_dict(model.predictor.state_dict(), predictor_state, source=net_p_path)
    check_state_dict(model.weighting.state_dict(), weighting_state, source=net_p_path)
    model.predictor.load_state_dict(predictor_state)
    model.weighting.load_state_dict(weighting_state)
    logger.info(
        "imported official DASR (N=%d, %d blocks, x%d) from %s and %s",
        num_experts,
        len(blocks),
        scale,
        net_g_path,
        net_p_path,
    )
    return model.eval()


def load_third_party(path: PathLike, *, scale: int | None = 4) -> nn.Module:
    """Load a third-party SR checkpoint (ESRGAN, BSRGAN, Real-ESRGAN, SwinIR, ...) via spandrel.

    The file is read weights-only (never as TorchScript); the architecture is detected from its
    keys. ``scale`` (None: any) must match the model's. Returns the network in eval mode, mapping
    [B, 3, H, W] in [0, 1] to [B, 3, scale*H, scale*W].
    """
    from spandrel import (
        ImageModelDescriptor,
        ModelLoader,
        UnsupportedModelError,
        canonicalize_state_dict,
    )

    state = canonicalize_state_dict(read_state_dict(path))
    try:
        descriptor = ModelLoader(device="cpu").load_from_state_dict(state)
    except UnsupportedModelError as error:
        raise CheckpointError(
            f"{path}: spandrel recognises no architecture in it ({error})"
        ) from error
    if not isinstance(descriptor, ImageModelDescriptor):
        raise CheckpointError(f"{path}: {descriptor.architecture.name} is not an SR model")
    if scale is not None and descriptor.scale != scale:
        raise CheckpointError(f"{path}: a x{descriptor.scale} model, expected x{scale}")
    logger.info("loaded %s (x%d) from %s", descriptor.architecture.name, descriptor.scale, path)
    return descriptor.model.eval()


def _existing(path: PathLike) -> Path:
    """`path` as a readable checkpoint file, else an error that says what is wrong with it.

    Missing: `FileNotFoundError`. A folder (a run folder, say), a broken link or a file this
    process may not read: `CheckpointError` saying so, not "not found".
    """
    file = Path(path)
    try:
        file.stat()
    except PermissionError as error:
        raise CheckpointError(
            f"{file}: permission denied (a folder on its path cannot be searched)"
        ) from error
    except FileNotFoundError as error:
        if file.is_symlink():
            raise CheckpointError(
                f"{file}: a link to {os.readlink(file)!r}, which does not exist"
            ) from error
        raise FileNotFoundError(f"checkpoint not found: {file}") from error
    except OSError as error:
        raise CheckpointError(f"{file}: cannot be read ({error.strerror or error})") from error
    if file.is_dir():
        inside = sorted(p.name for p in file.glob("*.safetensors"))[:_MAX_LISTED]
        hint = f"; it holds {inside}: pass one of them" if inside else ""
        raise CheckpointError(f"{file}: is a folder, not a checkpoint file{hint}")
    if not file.is_file():
        raise CheckpointError(f"{file}: not a regular file (a device or pipe?)")
    try:
        with open(file, "rb"):
            pass
    except PermissionError as error:
        raise CheckpointError(f"{file}: permission denied (the file is not readable)") from error
    except OSError as error:
        raise CheckpointError(f"{file}: cannot be opened ({error.strerror or error})") from error
    return file


def _is_tensor_dict(state: dict) -> bool:
    return bool(state) and all(isinstance(value, Tensor) for value in state.values())


def _require(state: dict[str, Tensor], key: str, source: PathLike, *, ndim: int) -> Tensor:
    if key not in state:
        raise CheckpointError(f"{source}: missing key {key!r} (keys: {_listing(sorted(state))})")
    if state[key].ndim != ndim:
        raise CheckpointError(
            f"{source}: {key!r} has shape {tuple(state[key].shape)}, expected {ndim} dimensions"
        )
    return state[key]


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = f", ... ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return f"[{shown}{more}]"
