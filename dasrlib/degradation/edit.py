"""Editing the degradation vector by its physical meaning (Sec. 4.6, Fig. 5).

A user (the ``--set`` option of ``dasr upscale``, the sliders of `dasrlib.interactive`, the Fig. 5
panels) names physical parameters of the first degradation stage; `edit_vector` re-encodes only
their slots and leaves every other slot of v exactly as it was. `physical_range` is the one place
that says which physical range a parameter's slot maps to [0, 1] (the Poisson range for a Poisson
noise level).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from dasrlib.config import shown

from .levels import Level
from .vector import NUM_SLOTS, SLOTS, Range, Slot, decode_vector, encode_physical, parameter_names

__all__ = [
    "PARAMETER_ALIASES",
    "as_vector",
    "edit_vector",
    "expand_edits",
    "parse_edits",
    "physical_range",
    "valid_parameter_names",
]

logger = logging.getLogger(__name__)

PARAMETER_ALIASES: dict[str, tuple[str, ...]] = {
    "blur_sigma": ("blur1_sigma_x", "blur1_sigma_y"),
    "blur_size": ("blur1_kernel_size",),
    "blur_kernel_size": ("blur1_kernel_size",),
    "blur_rotation": ("blur1_rotation",),
    "noise_level": ("noise1_level",),
    "noise_type": ("noise1_type",),
    "noise_gray": ("noise1_gray",),
    "jpeg_quality": ("jpeg1_quality",),
    "resize_scale": ("resize1_scale",),
    "resize_mode": ("resize1_mode",),
}
"""Short names for the parameters of the first degradation stage (``blur_sigma`` sets both
sigmas of the first blur). Every name of `dasrlib.degradation.vector.parameter_names` works too."""

_SLOTS_OF: dict[str, tuple[int, ...]] = {
    name: tuple(slot.index for slot in SLOTS if slot.parameter == name)
    for name in parameter_names()
}


def as_vector(v: Tensor, *, length: int = NUM_SLOTS) -> Tensor:
    """One degradation vector [length] (from [length] or [1, length]), detached float32.

    `length` is the model's v_dim (the 33 slots of Eq. 1 by default). Raises `ValueError` for
    another shape or a non-finite value.
    """
    if not isinstance(v, Tensor):
        raise TypeError(f"v must be a tensor of {length} values, got {type(v).__name__}")
    if v.ndim == 2 and v.shape[0] == 1:
        v = v[0]
    if v.ndim != 1 or v.shape[0] != length:
        raise ValueError(
            f"v must be one degradation vector of {length} slots ([{length}] or [1, {length}]), "
            f"got shape {tuple(v.shape)}"
        )
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"v holds NaN or Inf values: {v.tolist()}")
    return v.detach().float()


def _continuous_slot(name: str) -> Slot:
    for slot in SLOTS:
        if slot.name == name and slot.kind == "continuous":
            return slot
    known = [slot.name for slot in SLOTS if slot.kind == "continuous"]
    raise ValueError(f"{shown(name)} is not a continuous degradation parameter; known: {known}")


def physical_range(name: str, *, level: Level | str, noise_type: str | None = None) -> Range:
    """The physical (low, high) of continuous parameter `name` at `level` that maps to [0, 1].

    A noise level uses the Poisson scale range when `noise_type` is ``"poisson"``, the Gaussian
    sigma range (0-255) otherwise.
    """
    slot = _continuous_slot(name)
    ranges = slot.poisson_ranges if noise_type == "poisson" and slot.poisson_ranges else slot.ranges
    return ranges[Level(level)]


def valid_parameter_names() -> str:
    """One line listing the editable names and the aliases, for error and help messages."""
    aliases = ", ".join(f"{a} -> {'+'.join(t)}" for a, t in PARAMETER_ALIASES.items())
    return f"parameters: {', '.join(parameter_names())}; aliases: {aliases}"


def expand_edits(edits: dict[str, float | str]) -> dict[str, float | str]:
    """Aliases resolved to parameter names; an unknown name raises, listing the valid ones."""
    expanded: dict[str, float | str] = {}
    for name, value in edits.items():
        targets = PARAMETER_ALIASES.get(name, (name,))
        for target in targets:
            if target not in _SLOTS_OF:
                raise ValueError(
                    f"unknown degradation parameter {shown(name)}; {valid_parameter_names()}"
                )
            expanded[target] = value
    return expanded


def parse_edits(items: Sequence[str]) -> dict[str, float | str]:
    """``["blur_sigma=1.2", "noise1_type=gaussian"]`` -> edits for `edit_vector` (names checked)."""
    edits: dict[str, float | str] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.strip() or not text.strip():
            raise ValueError(f"{shown(item)}: expected NAME=VALUE, e.g. blur_sigma=1.2")
        try:
            value: float | str = float(text)
        except ValueError:
            value = text.strip()
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{shown(item)}: the value must be a finite number")
        edits[name.strip()] = value
    expand_edits(edits)  # unknown names fail here, before any image is processed
    return edits


def edit_vector(
    v: Tensor, edits: dict[str, float | str], *, level: Level | str = Level.SEVERE
) -> Tensor:
    """v [v_dim] with the slots of the edited physical parameters replaced (Sec. 4.6).

    ``edits`` maps parameter names (or `PARAMETER_ALIASES`) to physical values: sigma in pixels,
    rotation in radians, noise sigma in 0-255 (Poisson: scale), JPEG quality, resize scale; one-hot
    parameters take an option name (``noise1_type="poisson"``) or ``"none"``. Slots of parameters
    not edited keep their exact values, so no edit gives v back. Physical values map to [0, 1]
    with ``level``'s ranges (`dasrlib.degradation.vector.encode_physical`); a noise level is encoded
    with the range of its noise type (the edited one, else the one v says).
    """
    edits = expand_edits(edits)
    v = as_vector(v).cpu()
    out = v.clone()
    decoded = decode_vector(v, level=level)
    assert isinstance(decoded, dict)
    for name, value in edits.items():
        context: dict[str, float | str | None] = {name: value}
        if name.endswith("_level"):
            type_name = name.replace("_level", "_type")
            context[type_name] = edits.get(type_name, decoded.get(type_name))
        encoded = encode_physical(context, level=level)
        for index in _SLOTS_OF[name]:
            out[index] = encoded[index]
            if SLOTS[index].kind == "continuous" and not 0.0 <= float(encoded[index]) <= 1.0:
                noise_type = context.get(name.replace("_level", "_type"))
                logger.warning(
                    "%s=%s lies outside the %s range of this parameter%s (normalised value %.3g); "
                    "the model never saw such a value in training",
                    name,
                    value,
                    Level(level).value,
                    f" for {noise_type} noise" if name.endswith("_level") else "",
                    float(encoded[index]),
                )
    return out
