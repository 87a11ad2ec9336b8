"""The 33-slot degradation vector: declared table, normalisation, layouts, round trips."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from dasrlib.degradation.levels import Level, level_spec
from dasrlib.degradation.pipeline import degrade
from dasrlib.degradation.record import DegradationRecord
from dasrlib.degradation.vector import (
    NUM_SLOTS,
    SLOTS,
    decode_vector,
    encode_physical,
    encode_vector,
    parameter_names,
    slot_writers,
)


def _hr(batch: int = 4, size: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(batch, 3, size // 8, size // 8, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")


def _severe_record(seed: int = 0, **final_overrides: float) -> DegradationRecord:
    spec = level_spec("severe")
    blur2 = dataclasses.replace(spec.stages[1].blur, prob=final_overrides.pop("blur2", 0.8))
    sinc = dataclasses.replace(spec.final.sinc, prob=final_overrides.pop("sinc", 0.8))
    spec = dataclasses.replace(
        spec,
        stages=(spec.stages[0], dataclasses.replace(spec.stages[1], blur=blur2)),
        final=dataclasses.replace(spec.final, sinc=sinc),
    )
    _, record = degrade(_hr(), "severe", generator=torch.Generator().manual_seed(seed), spec=spec)
    return record


def test_slot_table_matches_design() -> None:
    assert len(SLOTS) == NUM_SLOTS == 33
    assert [s.index for s in SLOTS] == list(range(33))
    assert len({s.name for s in SLOTS}) == 33
    names = {s.index: s.name for s in SLOTS}
    assert names[0] == "blur1_kernel_size" and names[7] == "blur2_rotation"
    assert names[8] == "sinc_kernel_size" and names[9] == "sinc_omega_c"
    assert names[10] == "resize1_scale" and names[13] == "resize1_mode_bicubic"
    assert names[18] == "noise1_level" and names[19] == "noise1_gray"
    assert names[21] == "noise1_type_poisson" and names[25] == "noise2_type_poisson"
    assert names[26] == "jpeg1_quality" and names[27] == "jpeg2_quality"
    assert names[28] == "final_order_resize_sinc_then_jpeg" and names[32] == "final_mode_bicubic"
    kinds = {s.index: s.kind for s in SLOTS}
    assert {i for i, k in kinds.items() if k == "flag"} == {19, 23}
    onehot = {i for i, k in kinds.items() if k == "onehot"}
    assert onehot == {11, 12, 13, 15, 16, 17, 20, 21, 24, 25, 28, 29, 30, 31, 32}
    # the ranges of dasrlib/degradation/levels.py (Sec. 3.2), per level
    by_name = {s.name: s for s in SLOTS}
    assert by_name["blur1_sigma_x"].ranges == {
        Level.WEAK: (0.2, 0.8),
        Level.STANDARD: (0.2, 1.5),
        Level.SEVERE: (0.2, 3.0),
    }
    assert by_name["blur2_sigma_y"].ranges == {Level.SEVERE: (0.2, 1.5)}
    assert by_name["resize1_scale"].ranges[Level.STANDARD] == (0.5, 1.2)
    assert by_name["resize2_scale"].ranges == {Level.SEVERE: (0.3, 1.2)}
    assert by_name["noise1_level"].ranges[Level.WEAK] == (1.0, 10.0)
    assert by_name["noise1_level"].poisson_ranges[Level.STANDARD] == (0.05, 1.5)
    assert by_name["noise2_level"].poisson_ranges == {Level.SEVERE: (0.05, 2.5)}
    assert by_name["jpeg1_quality"].ranges[Level.WEAK] == (90.0, 95.0)
    assert by_name["jpeg2_quality"].ranges == {Level.SEVERE: (30.0, 95.0)}
    assert by_name["sinc_omega_c"].ranges[Level.SEVERE] == pytest.approx((math.pi / 3, math.pi))
    assert by_name["blur1_kernel_size"].ranges[Level.WEAK] == (7.0, 21.0)


def test_only_slot_9_may_overlap_and_only_in_the_reference_layout() -> None:
    official = slot_writers("official")
    assert all(len(w) == 1 for w in official.values())
    reference = slot_writers("official-reference")
    overlapping = {slot for slot, writers in reference.items() if len(writers) > 1}
    assert overlapping == {9}
    assert reference[9] == ("sinc_omega_c", "blur2_applied")
    with pytest.raises(ValueError, match="unknown vector layout"):
        slot_writers("v2")


def test_vector_normalises_physical_values_by_the_level_range() -> None:
    record = _severe_record(seed=1, blur2=1.0, sinc=1.0)
    v = record.vector()
    p = record.to_dicts()
    for i in range(record.batch_size):
        assert v[i, 0] == pytest.approx((p[i]["blur1_kernel_size"] - 7) / 14)
        assert v[i, 1] == pytest.approx((p[i]["blur1_sigma_x"] - 0.2) / 2.8)
        assert v[i, 5] == pytest.approx((p[i]["blur2_sigma_x"] - 0.2) / 1.3)
        assert v[i, 9] == pytest.approx((p[i]["sinc_omega_c"] - math.pi / 3) / (2 * math.pi / 3))
        assert v[i, 10] == pytest.approx((p[i]["resize1_scale"] - 0.15) / 1.35)
        lo, hi = (1.0, 30.0) if p[i]["noise1_type"] == "gaussian" else (0.05, 3.0)
        assert v[i, 18] == pytest.approx((p[i]["noise1_level"] - lo) / (hi - lo), abs=1e-6)
        assert v[i, 26] == pytest.approx((p[i]["jpeg1_quality"] - 30) / 65, abs=1e-6)
        if p[i]["blur1_isotropic"]:
            assert v[i, 3] == pytest.approx(0.5) and v[i, 1] == v[i, 2]
        assert float(v[i, 11:14].sum()) == 1.0 and float(v[i, 30:33].sum()) == 1.0
        assert float(v[i, 28:30].sum()) == 1.0 and float(v[i, 20:22].sum()) == 1.0


def test_official_layout_keeps_omega_c_in_slot_9_and_zeros_skipped_operations() -> None:
    record = _severe_record(seed=2, blur2=1.0, sinc=1.0)
    official = record.vector("official")
    reference = record.vector("official-reference")
    assert float(official[:, 9].max()) < 1.0  # omega_c < pi for these draws
    assert torch.all(reference[:, 9] == 1.0)  # the reference overwrites it with the blur-2 flag
    assert torch.equal(official[:, :9], reference[:, :9])
    assert torch.equal(official[:, 10:], reference[:, 10:])

    skipped = _severe_record(seed=3, blur2=0.0, sinc=0.0)
    off = skipped.vector("official")
    ref = skipped.vector("official-reference")
    assert float(off[:, 4:10].abs().sum()) == 0.0  # absent operations leave 0
    assert float(ref[:, 4:8].abs().sum()) > 0  # the reference writes the skipped kernel anyway
    torch.testing.assert_close(ref[:, 8:10], torch.full_like(ref[:, 8:10], -0.5))


def test_weak_and_bicubic_vectors_leave_absent_slots_at_zero() -> None:
    _, weak = degrade(_hr(), "weak", generator=torch.Generator().manual_seed(0))
    v = weak.vector()
    assert float(v[:, 4:10].abs().sum()) == 0 and float(v[:, 14:18].abs().sum()) == 0
    assert float(v[:, 22:26].abs().sum()) == 0 and float(v[:, 27:30].abs().sum()) == 0
    _, bicubic = degrade(_hr(), "bicubic", generator=torch.Generator().manual_seed(0))
    vb = bicubic.vector()
    expected = torch.zeros(4, 33)
    expected[:, 32] = 1.0
    assert torch.equal(vb, expected)


@pytest.mark.parametrize("level", [Level.WEAK, Level.STANDARD, Level.SEVERE])
def test_encode_decode_round_trip(level: Level) -> None:
    _, record = degrade(_hr(), level, generator=torch.Generator().manual_seed(5))
    v = encode_vector(record)
    decoded = decode_vector(v, level=level)
    assert isinstance(decoded, list) and len(decoded) == 4
    physical = record.to_dicts()
    for row, d, p in zip(v, decoded, physical, strict=True):
        torch.testing.assert_close(encode_physical(d, level=level), row, atol=1e-5, rtol=0)
        assert d["blur1_sigma_x"] == pytest.approx(p["blur1_sigma_x"], abs=1e-5)
        assert d["noise1_level"] == pytest.approx(p["noise1_level"], rel=1e-5)
        assert d["noise1_type"] == p["noise1_type"]
        assert d["jpeg1_quality"] == pytest.approx(p["jpeg1_quality"], abs=1e-4)
        assert d["resize1_mode"] == p["resize1_mode"] and d["final_mode"] == p["final_mode"]
        assert round(d["blur1_kernel_size"]) == p["blur1_kernel_size"]


def test_encode_physical_from_slider_values() -> None:
    params = {
        "blur1_sigma_x": 1.6,
        "blur1_sigma_y": 1.6,
        "blur1_kernel_size": 21,
        "noise1_level": 15.5,
        "noise1_type": "gaussian",
        "noise1_gray": 1.0,
        "jpeg1_quality": 62.5,
        "final_mode": "bilinear",
    }
    v = encode_physical(params, level="severe")
    assert v.shape == (33,)
    assert v[1] == pytest.approx(0.5) and v[0] == pytest.approx(1.0)
    assert v[18] == pytest.approx(0.5) and v[19] == 1.0 and v[20] == 1.0 and v[21] == 0.0
    assert v[26] == pytest.approx(0.5) and v[31] == 1.0
    back = decode_vector(v, level="severe")
    for key, value in params.items():
        assert back[key] == (pytest.approx(value) if isinstance(value, float | int) else value)
    assert back["final_order"] == "none" and back["resize2_mode"] == "none"
    poisson = encode_physical({"noise1_level": 1.525, "noise1_type": "poisson"}, level="severe")
    assert poisson[18] == pytest.approx(0.5) and poisson[21] == 1.0
    assert decode_vector(poisson)["noise1_level"] == pytest.approx(1.525)


def test_encode_physical_rejects_unknown_names_and_options() -> None:
    with pytest.raises(ValueError, match="unknown degradation parameters"):
        encode_physical({"blur_sigma": 1.0})
    with pytest.raises(ValueError, match="final_mode"):
        encode_physical({"final_mode": "lanczos"})
    with pytest.raises(ValueError, match="no range at level 'weak'"):
        encode_physical({"blur2_sigma_x": 1.0}, level="weak")
    assert set(parameter_names()) >= {"blur1_sigma_x", "noise2_level", "final_order"}


def test_decode_vector_checks_shape() -> None:
    with pytest.raises(ValueError, match="33"):
        decode_vector(torch.zeros(32))
    one = decode_vector(torch.zeros(33), level="weak")
    assert isinstance(one, dict) and "blur2_sigma_x" not in one


def test_level_names_any_case_and_unknown_ones_list_the_valid() -> None:
    from dasrlib.degradation.levels import Level

    assert Level("Severe") is Level.SEVERE and Level(" weak ") is Level.WEAK
    with pytest.raises(ValueError, match=r"'mild'; valid levels: bicubic, weak, standard, severe"):
        Level("mild")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_encode_physical_refuses_non_finite_values(value: float) -> None:
    from dasrlib.degradation.vector import encode_physical

    with pytest.raises(ValueError, match=r"blur1_sigma_x=.*finite"):
        encode_physical({"blur1_sigma_x": value})
