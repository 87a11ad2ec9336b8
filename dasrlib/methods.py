"""What can be evaluated: SR methods and how each turns an LR image into x4 SR.

A `Method` names one way of producing x4 SR: bicubic interpolation, one of our checkpoints (DASR or
a retrained backbone, read by `dasrlib.models.checkpoints.load_model`), an official DASR checkpoint
(net_g + net_p), or a third-party checkpoint read through spandrel (RRDB/ESRGAN, BSRGAN,
Real-ESRGAN, SwinIR). `load_upscaler` loads one onto a device; `network_upscaler` wraps a network
already in memory; `method_from_spec` reads the notebooks' way of naming weights.

A method's kind is declared by its spec, never guessed from the file: the official release loads
through `dasrlib.models.loading.load_sr_model`, our checkpoints and third-party files through
their readers in `dasrlib.models.checkpoints` (a third-party model must be x4). Which model to
super-resolve with when none is named is `dasrlib.models.loading.choose_model`.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dasrlib.models.checkpoints import load_model, load_third_party
from dasrlib.models.loading import load_sr_model
from dasrlib.pretrained import weights_dir
from dasrlib.results import project_path

__all__ = [
    "Method",
    "MethodKind",
    "MethodSpec",
    "Upscaler",
    "load_upscaler",
    "method_from_spec",
    "network_upscaler",
]


class MethodKind(str, enum.Enum):
    """How a method's SR is produced."""

    BICUBIC = "bicubic"
    CHECKPOINT = "checkpoint"  # ours: dasrlib.models.checkpoints.load_model
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
        """One of our checkpoints (DASR or a backbone), as
        `dasrlib.models.checkpoints.save_weights` writes."""
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

    def record(self) -> dict[str, Any]:
        """What a results sidecar records about the method: kind, weight files, paper column."""
        return {
            "kind": self.kind.value,
            "weights": [str(w) for w in self.weights],
            "paper_name": self.paper_name,
        }


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
        net = load_sr_model(official_paths=(method.weights[0], method.weights[1]), device=device)
    else:
        net = load_third_party(method.weights[0])
    net = net.to(device)
    net.eval()
    return network_upscaler(net)


MethodSpec = str | Mapping[str, str] | None
"""How a notebook names a method's weights: None (not provided), "bicubic", a checkpoint path,
or {"net_g": path, "net_p": path} for an official DASR release."""


WEIGHTS_PREFIX = "weights:"
"""Method-spec prefix naming a file in the converted-weights folder, e.g.
``weights:realesrgan-x4plus.safetensors`` (what ``python -m dasrlib.data fetch`` writes)."""


def _spec_path(spec: str | os.PathLike[str]) -> Path:
    text = os.fspath(spec)
    if text.startswith(WEIGHTS_PREFIX):
        return weights_dir() / text[len(WEIGHTS_PREFIX) :]
    return project_path(text)


def method_from_spec(
    name: str,
    spec: MethodSpec,
    *,
    third_party: Iterable[str] = (),
    paper: Mapping[str, Any] | None = None,
) -> Method | None:
    """The `Method` a notebook parameter describes; None when the weights were not provided.

    "bicubic" -> bicubic; {"net_g", "net_p"} -> official DASR; a path -> a third-party checkpoint
    when `name` is in `third_party`, otherwise one of our checkpoints. A path ``weights:FILE`` is
    FILE in the converted-weights folder (`dasrlib.pretrained.weights_dir`, which follows
    ``$DASR_WEIGHTS_DIR``); other relative paths are from the repository root. The paper column
    is `name` when `paper` has it.
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
            net_g=_spec_path(spec["net_g"]),
            net_p=_spec_path(spec["net_p"]),
            paper_name=paper_name,
        )
    if str(spec).lower() == "bicubic":
        return Method.bicubic(name=name)
    if name in set(third_party):
        return Method.third_party(name=name, path=_spec_path(spec), paper_name=paper_name)
    return Method.checkpoint(name=name, path=_spec_path(spec), paper_name=paper_name)
