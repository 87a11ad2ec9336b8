"""Precision resolution: "auto" is bf16 with channels-last on CPUs with bf16 matrix units."""

from __future__ import annotations

import json

import pytest
import torch

from dasrlib import device as device_module
from dasrlib.device import (
    autocast_dtype,
    cpu_has_bf16,
    describe_precision,
    prefers_channels_last,
)
from dasrlib.train.config import config_from_parameters
from dasrlib.train.trainer import Trainer

CPU = torch.device("cpu")


@pytest.mark.parametrize("has_bf16", [True, False])
def test_auto_follows_the_cpu(monkeypatch: pytest.MonkeyPatch, has_bf16: bool) -> None:
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: has_bf16)
    expected = torch.bfloat16 if has_bf16 else None
    assert autocast_dtype(CPU, "auto") is expected
    assert prefers_channels_last(CPU, autocast_dtype(CPU, "auto")) is has_bf16
    assert describe_precision(CPU, "auto").startswith(
        "bfloat16 autocast, channels-last" if has_bf16 else "fp32, contiguous"
    )
    # fp32 stays available everywhere
    assert autocast_dtype(CPU, "fp32") is None
    assert describe_precision(CPU, "fp32").startswith("fp32, contiguous")


def test_cpu_has_bf16_asks_torch() -> None:
    assert cpu_has_bf16() == bool(
        torch.backends.mkldnn.is_available()
        and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    )


@pytest.mark.parametrize("has_bf16", [True, False])
def test_trainer_records_the_resolved_precision(
    monkeypatch: pytest.MonkeyPatch, tmp_path, has_bf16: bool
) -> None:
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: has_bf16)
    config = config_from_parameters(
        dict(stage="pretrain", num_feat=8, num_block=1, val_images=0, out_dir=str(tmp_path))
    )
    trainer = Trainer(config, device=CPU)
    assert trainer.amp_dtype is (torch.bfloat16 if has_bf16 else None)
    assert trainer.channels_last is has_bf16
    trainer.write_run_json("running")
    record = json.loads((trainer.run_dir / "run.json").read_text())
    assert record["precision"] == ("bfloat16" if has_bf16 else "fp32")
    assert record["channels_last"] is has_bf16


@pytest.mark.parametrize(
    ("amx", "avx512_bf16", "units"),
    [
        (True, True, "AMX bf16 tiles"),
        (False, True, "AVX512-BF16, no AMX"),
        (False, False, "no bf16 units"),
    ],
)
def test_the_cpu_is_described_with_its_bf16_units(
    monkeypatch: pytest.MonkeyPatch, amx: bool, avx512_bf16: bool, units: str
) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    described = device_module.describe_cpu()
    assert described.endswith(f"({units})") and len(described) > len(units) + 3
