"""The 33-slot degradation vector v (Sec. 3.2, Eq. 1: the regression target of predictor P).

`SLOTS` declares every slot: its index, a human-friendly name, its kind (continuous, one-hot or
flag), the physical parameter it encodes and, for continuous slots, the physical range per level.
Each continuous value is normalised to [0, 1] by the range of the level that produced it; absent
operations leave 0. The layout is the reference implementation's (csjliang/DASR,
dasr/models/DASR_model.py), so official checkpoints' v_hat mean what `decode_vector` says:

    0-3   blur1_kernel_size, blur1_sigma_x, blur1_sigma_y, blur1_rotation
    4-7   blur2_kernel_size, blur2_sigma_x, blur2_sigma_y, blur2_rotation
    8-9   sinc_kernel_size, sinc_omega_c
    10-13 resize1_scale, resize1_mode (one-hot area, bilinear, bicubic)
    14-17 resize2_scale, resize2_mode
    18-21 noise1_level (Gaussian sigma 0-255 or Poisson scale), noise1_gray, noise1_type
          (one-hot gaussian, poisson)
    22-25 noise2_level, noise2_gray, noise2_type
    26-27 jpeg1_quality, jpeg2_quality (jpeg2 is the final JPEG of the severe level)
    28-29 final_order (one-hot resize_sinc_then_jpeg, jpeg_then_resize_sinc)
    30-32 final_mode (one-hot area, bilinear, bicubic)

Facts confirmed in the reference code: kernel sizes (blur and sinc) are normalised by [7, 21] at
every level; an isotropic kernel stores sigma_y = sigma_x and rotation 0 (so 0.5); a "keep" resize
stores scale 1 normalised by the stage's range; the noise level is normalised by the Gaussian or
the Poisson range, whichever was drawn.

Layouts:
- ``"official"`` (default): the reference slots with its defects fixed. Slot 9 holds omega_c;
  a skipped second blur leaves slots 4-7 at 0; an absent sinc filter leaves slots 8-9 at 0.
- ``"official-reference"``: reproduces what the reference code writes, for comparison with its
  checkpoints' training targets: the "second blur applied" flag (1) overwrites slot 9 whenever
  the second blur runs; slots 4-7 hold the drawn second kernel even when it was skipped; an
  absent sinc filter stores kernel size 0 and omega_c 0, normalised to -0.5 and -0.5 (outside
  [0, 1]). Only slot 9 has two writers (`slot_writers`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from dasrlib.config import shown

from .levels import FINAL_ORDERS, LEVEL_SPECS, NOISE_TYPES, RESIZE_MODES, Level

if TYPE_CHECKING:  # the record encodes itself through this module (record -> vector -> levels)
    from .record import DegradationRecord

__all__ = [
    "LAYOUTS",
    "NUM_SLOTS",
    "SLOTS",
    "Slot",
    "decode_vector",
    "encode_physical",
    "encode_vector",
    "parameter_names",
    "slot_writers",
]

Range = tuple[float, float]
NUM_SLOTS = 33
LAYOUTS: tuple[str, ...] = ("official", "official-reference")
_NAN = float("nan")


@dataclass(frozen=True)
class Slot:
    """One entry of the 33-slot vector.

    Attributes:
        index: position in v.
        name: unique slot name (one-hot slots append the option: ``resize1_mode_area``).
        kind: ``"continuous"``, ``"onehot"`` or ``"flag"``.
        parameter: the physical parameter it encodes (``resize1_mode`` for its one-hot slots).
        option: the option of a one-hot slot (``"area"``), else None.
        unit: unit of the physical value.
        ranges: continuous slots: the physical range per level that maps to [0, 1].
        poisson_ranges: noise-level slots: the range used when the noise is Poisson.
    """

    index: int
    name: str
    kind: str
    parameter: str
    option: str | None = None
    unit: str = ""
    ranges: Mapping[Level, Range] = field(default_factory=dict)
    poisson_ranges: Mapping[Level, Range] = field(default_factory=dict)


def _stage_ranges(stage: int, getter: Any) -> dict[Level, Range]:
    """{level: range} over the default levels that have stage `stage` and the operation."""
    out: dict[Level, Range] = {}
    for level, spec in LEVEL_SPECS.items():
        if stage < len(spec.stages):
            value = getter(spec.stages[stage])
            if value is not None:
                out[level] = tuple(float(x) for x in value)
    return out


def _final_ranges(getter: Any) -> dict[Level, Range]:
    out: dict[Level, Range] = {}
    for level, spec in LEVEL_SPECS.items():
        value = getter(spec)
        if value is not None:
            out[level] = tuple(float(x) for x in value)
    return out


def _attr(op: str, name: str) -> Any:
    def get(stage: Any) -> Any:
        spec = getattr(stage, op)
        return None if spec is None else getattr(spec, name)

    return get


def _jpeg2_ranges() -> dict[Level, Range]:
    """jpeg2 holds the second stage's JPEG or the final JPEG; a level may not have both."""
    ranges = _stage_ranges(1, _attr("jpeg", "quality"))
    final = _final_ranges(lambda s: None if s.final.jpeg is None else s.final.jpeg.quality)
    clash = set(ranges) & set(final)
    if clash:
        raise ValueError(f"levels {sorted(lv.value for lv in clash)} write jpeg2 twice")
    return {**ranges, **final}


def _build_slots() -> tuple[Slot, ...]:
    slots: list[Slot] = []

    def add(name: str, kind: str, unit: str = "", **kw: Any) -> None:
        slots.append(Slot(len(slots), name, kind, kw.pop("parameter", name), unit=unit, **kw))

    def add_onehot(parameter: str, options: Sequence[str]) -> None:
        for option in options:
            add(f"{parameter}_{option}", "onehot", parameter=parameter, option=option)

    for stage in (0, 1):
        n = stage + 1
        add(
            f"blur{n}_kernel_size",
            "continuous",
            "px",
            ranges=_stage_ranges(stage, _attr("blur", "kernel_size")),
        )
        for axis in ("x", "y"):
            add(
                f"blur{n}_sigma_{axis}",
                "continuous",
                "px",
                ranges=_stage_ranges(stage, _attr("blur", "sigma")),
            )
        add(
            f"blur{n}_rotation",
            "continuous",
            "rad",
            ranges=_stage_ranges(stage, _attr("blur", "rotation")),
        )
    add(
        "sinc_kernel_size",
        "continuous",
        "px",
        ranges=_final_ranges(lambda s: None if s.final.sinc is None else s.final.sinc.kernel_size),
    )
    add(
        "sinc_omega_c",
        "continuous",
        "rad/px",
        ranges=_final_ranges(lambda s: None if s.final.sinc is None else s.final.sinc.omega_c),
    )
    for stage in (0, 1):
        n = stage + 1
        add(
            f"resize{n}_scale",
            "continuous",
            "x",
            ranges=_stage_ranges(stage, _attr("resize", "scale")),
        )
        add_onehot(f"resize{n}_mode", RESIZE_MODES)
    for stage in (0, 1):
        n = stage + 1
        add(
            f"noise{n}_level",
            "continuous",
            "sigma (0-255) | Poisson scale",
            ranges=_stage_ranges(stage, _attr("noise", "gaussian_sigma")),
            poisson_ranges=_stage_ranges(stage, _attr("noise", "poisson_scale")),
        )
        add(f"noise{n}_gray", "flag")
        add_onehot(f"noise{n}_type", NOISE_TYPES)
    add("jpeg1_quality", "continuous", "quality", ranges=_stage_ranges(0, _attr("jpeg", "quality")))
    add("jpeg2_quality", "continuous", "quality", ranges=_jpeg2_ranges())
    add_onehot("final_order", FINAL_ORDERS)
    add_onehot("final_mode", RESIZE_MODES)
    if len(slots) != NUM_SLOTS:
        raise AssertionError(f"the slot table has {len(slots)} entries, expected {NUM_SLOTS}")
    return tuple(slots)


#: The declared 33-slot table.
SLOTS: tuple[Slot, ...] = _build_slots()
_BY_PARAMETER: dict[str, list[Slot]] = {}
for _slot in SLOTS:
    _BY_PARAMETER.setdefault(_slot.parameter, []).append(_slot)
_OPTIONS: dict[str, tuple[str, ...]] = {
    p: tuple(str(s.option) for s in group)
    for p, group in _BY_PARAMETER.items()
    if group[0].kind == "onehot"
}


def parameter_names() -> tuple[str, ...]:
    """Physical parameter names in slot order (the keys of `decode_vector`)."""
    return tuple(_BY_PARAMETER)


def slot_writers(layout: str = "official") -> dict[int, tuple[str, ...]]:
    """Which named quantities write each slot: one each, except slot 9 in the reference layout."""
    _check_layout(layout)
    writers = {slot.index: (slot.name,) for slot in SLOTS}
    if layout == "official-reference":
        writers[9] = (*writers[9], "blur2_applied")
    return writers


def _type_of(noise_level: str) -> str:
    """``noise1_level`` -> ``noise1_type``."""
    return noise_level.replace("_level", "_type")


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown vector layout {layout!r}; expected one of {LAYOUTS}")


# ----------------------------------------------------------------------------- encoding


Column = tuple[Tensor, "Tensor | None"]
"""A [B] physical value per sample (one-hot parameters as option index) and a [B] bool mask of
the samples where the operation was applied (None: all)."""


def _record_columns(record: DegradationRecord, *, reference: bool) -> dict[str, Column]:
    """The physical column of every parameter the record has."""
    cols: dict[str, Column] = {}
    for n, stage in enumerate(record.stages, start=1):
        if stage.blur is not None:
            blur = stage.blur
            # The reference writes the drawn second kernel even when it skips the blur.
            applied = torch.ones_like(blur.applied) if reference else blur.applied
            cols[f"blur{n}_kernel_size"] = (blur.kernel_size, applied)
            cols[f"blur{n}_sigma_x"] = (blur.sigma_x, applied)
            cols[f"blur{n}_sigma_y"] = (blur.sigma_y, applied)
            cols[f"blur{n}_rotation"] = (blur.rotation, applied)
        if stage.resize is not None:
            mode = stage.resize.mode.float()
            cols[f"resize{n}_scale"] = (torch.full_like(mode, stage.resize.scale), None)
            cols[f"resize{n}_mode"] = (mode, None)
        if stage.noise is not None:
            noise = stage.noise
            cols[f"noise{n}_level"] = (noise.level, noise.applied)
            cols[f"noise{n}_gray"] = (noise.gray, noise.applied)
            cols[f"noise{n}_type"] = (noise.poisson, noise.applied)
        if stage.jpeg is not None:
            cols[f"jpeg{n}_quality"] = (stage.jpeg.quality, stage.jpeg.applied)
    final = record.final
    if final.sinc is not None:
        sinc = final.sinc
        if reference:
            # The reference stores kernel size 0 and omega_c 0 for "no sinc" and normalises them.
            zero = torch.zeros_like(sinc.omega_c)
            cols["sinc_kernel_size"] = (
                torch.where(sinc.applied, sinc.kernel_size.float(), zero),
                None,
            )
            cols["sinc_omega_c"] = (torch.where(sinc.applied, sinc.omega_c.float(), zero), None)
        else:
            cols["sinc_kernel_size"] = (sinc.kernel_size, sinc.applied)
            cols["sinc_omega_c"] = (sinc.omega_c, sinc.applied)
    if final.jpeg is not None:
        if "jpeg2_quality" in cols:
            raise ValueError(
                "a level with a second-stage JPEG and a final JPEG has no 33-slot form"
            )
        cols["jpeg2_quality"] = (final.jpeg.quality, final.jpeg.applied)
    if final.sinc_first is not None:
        cols["final_order"] = (~final.sinc_first, None)
    cols["final_mode"] = (final.mode, None)
    return cols


@functools.lru_cache(maxsize=32)
def _slot_constants(level: Level, device: torch.device) -> dict[str, Tensor]:
    """[33] per-slot constants of `level` on `device`: ranges, one-hot options, kinds."""
    lo, hi, poisson_lo, poisson_hi, option = [], [], [], [], []
    for slot in SLOTS:
        low, high = slot.ranges.get(level, (0.0, 1.0))
        p_low, p_high = slot.poisson_ranges.get(level, (low, high))
        lo.append(low)
        hi.append(high)
        poisson_lo.append(p_low)
        poisson_hi.append(p_high)
        option.append(_OPTIONS[slot.parameter].index(slot.option) if slot.option else -1.0)
    kind = [slot.kind for slot in SLOTS]

    def vec(values: Sequence[float]) -> Tensor:
        return torch.tensor(values, dtype=torch.float32, device=device)

    return {
        "lo": vec(lo),
        "hi": vec(hi),
        "poisson_lo": vec(poisson_lo),
        "poisson_hi": vec(poisson_hi),
        "option": vec(option),
        "continuous": torch.tensor([k == "continuous" for k in kind], device=device),
        "onehot": torch.tensor([k == "onehot" for k in kind], device=device),
    }


def _encode_columns(
    cols: Mapping[str, Column], level: Level, batch: int, device: torch.device
) -> Tensor:
    """Normalise the physical columns into [B, 33] following `SLOTS` (a few batched ops)."""
    for name in cols:
        head = _BY_PARAMETER[name][0]
        if head.kind == "continuous" and level not in head.ranges:
            raise ValueError(f"slot {head.index} ({name}) has no range at level {level.value!r}")
    missing = torch.full((batch,), _NAN, device=device)
    never = torch.zeros(batch, dtype=torch.bool, device=device)
    always = torch.ones(batch, dtype=torch.bool, device=device)
    floats = {name: values.float() for name, (values, _) in cols.items()}
    values = torch.stack([floats.get(slot.parameter, missing) for slot in SLOTS], dim=1)

    def applied(name: str) -> Tensor:
        if name not in cols:
            return never
        mask = cols[name][1]
        return always if mask is None else mask

    present = torch.stack([applied(slot.parameter) for slot in SLOTS], dim=1)
    poisson = torch.stack(
        [
            floats[_type_of(slot.parameter)] == 1
            if slot.poisson_ranges and _type_of(slot.parameter) in floats
            else never
            for slot in SLOTS
        ],
        dim=1,
    )
    const = _slot_constants(level, device)
    lo = torch.where(poisson, const["poisson_lo"], const["lo"])
    hi = torch.where(poisson, const["poisson_hi"], const["hi"])
    encoded = torch.where(
        const["continuous"],
        (values - lo) / (hi - lo),
        torch.where(const["onehot"], (values == const["option"]).float(), values),
    )
    return torch.where(present & ~torch.isnan(values), encoded, torch.zeros_like(encoded))


def encode_vector(record: DegradationRecord, *, layout: str = "official") -> Tensor:
    """The regression target v of a degraded batch: [B, 33] on the record's device.

    In [0, 1] for the official layout; see the module docstring for ``"official-reference"``.
    """
    _check_layout(layout)
    reference = layout == "official-reference"
    cols = _record_columns(record, reference=reference)
    device = record.final.mode.device
    if record.level is Level.BICUBIC:
        # No slot has a bicubic range: only the final-mode one-hot is written.
        cols = {"final_mode": cols["final_mode"]}
    v = _encode_columns(cols, record.level, record.batch_size, device)
    if reference and len(record.stages) > 1 and record.stages[1].blur is not None:
        flag = record.stages[1].blur.applied.to(device)
        v[:, 9] = torch.where(flag, torch.ones_like(v[:, 9]), v[:, 9])
    return v


def encode_physical(
    params: Mapping[str, float | str | None], *, level: Level | str = Level.SEVERE
) -> Tensor:
    """[33] official-layout vector from physical values (the inverse of `decode_vector`).

    Keys are `parameter_names()`; continuous values in physical units (sigma in px, noise sigma in
    0-255, JPEG quality, ...), one-hot parameters as option names (``"bicubic"``), flags in [0, 1].
    Missing keys, None and ``"none"`` leave their slots at 0. Values outside a range are not
    clipped (the encoding is linear).
    """
    level = Level(level)
    unknown = sorted(set(params) - set(_BY_PARAMETER))
    if unknown:
        raise ValueError(f"unknown degradation parameters {unknown}; known: {parameter_names()}")
    cols: dict[str, Column] = {}
    for name, value in params.items():
        if value is None or value == "none":
            continue
        if name in _OPTIONS:
            if value not in _OPTIONS[name]:
                raise ValueError(
                    f"{name}={shown(value)}; expected one of {_OPTIONS[name]} or 'none'"
                )
            cols[name] = (torch.tensor([float(_OPTIONS[name].index(str(value)))]), None)
        else:
            number = float(value)
            if not math.isfinite(number):
                raise ValueError(f"{name}={shown(value)}: expected a finite number")
            cols[name] = (torch.tensor([number]), None)
    return _encode_columns(cols, level, 1, torch.device("cpu"))[0]


# ----------------------------------------------------------------------------- decoding


def _decode_one(v: Sequence[float], level: Level) -> dict[str, float | str]:
    out: dict[str, float | str] = {}
    for parameter, group in _BY_PARAMETER.items():
        head = group[0]
        if head.kind == "onehot":
            values = [v[s.index] for s in group]
            best = max(range(len(values)), key=values.__getitem__)
            out[parameter] = "none" if values[best] <= 0.0 else str(group[best].option)
        elif head.kind == "flag":
            out[parameter] = float(v[head.index])
        elif level in head.ranges:
            lo, hi = head.ranges[level]
            if head.poisson_ranges:
                gaussian, poisson = (v[s.index] for s in _BY_PARAMETER[_type_of(parameter)])
                if poisson > gaussian:
                    lo, hi = head.poisson_ranges[level]
            out[parameter] = lo + float(v[head.index]) * (hi - lo)
    return out


def decode_vector(
    v: Tensor, *, level: Level | str = Level.SEVERE
) -> dict[str, float | str] | list[dict[str, float | str]]:
    """Physical values of a 33-slot vector (official layout), for display and editing.

    A vector does not say which level produced it; `level` picks the ranges (default severe,
    the widest). Parameters the level does not have (e.g. blur2 at weak) are left out.
    One-hot groups decode to the option with the largest entry, or ``"none"`` when all are 0.

    Args:
        v: [33] or [B, 33].

    Returns:
        One dict for [33], a list of B dicts for [B, 33].
    """
    level = Level(level)
    if v.shape[-1] != NUM_SLOTS or v.ndim not in (1, 2):
        raise ValueError(f"expected a [33] or [B, 33] vector, got shape {tuple(v.shape)}")
    rows = v.detach().double().cpu().reshape(-1, NUM_SLOTS).tolist()
    decoded = [_decode_one(row, level) for row in rows]
    return decoded[0] if v.ndim == 1 else decoded
