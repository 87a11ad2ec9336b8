"""benchmarks/lease.py: the one script a GPU lease runs writes every fixed key with numbers."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LATENCY_KEYS = {"fp32", "tf32", "bf16", "fp16", "graph"}
UPSCALE_STAGES = {"transfer", "predictor", "mixing", "network", "tiling", "output_conversion"}
SYNTHESIS_KEYS = {"bicubic", "weak", "standard", "severe", "training_pairs"}


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@pytest.mark.slow
def test_lease_script_quick_cpu_writes_every_fixed_key(tmp_path):
    out = tmp_path / "lease.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "benchmarks/lease.py", "--device", "cpu", "--quick", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert all(section["status"] == "ok" for section in report["sections"].values()), report[
        "sections"
    ]
    environment = report["environment"]
    assert environment["torch"] and environment["device_name"] and environment["python"]
    assert set(report["latency_ratio"]) == LATENCY_KEYS
    assert all(_number(r) and r > 0 for r in report["latency_ratio"].values())
    assert set(report["latency_ms"]) == LATENCY_KEYS
    for key, networks in report["latency_ms"].items():
        assert _number(networks["srresnet"]) and _number(networks["dasr"]), key
        ratio = networks["dasr"] / networks["srresnet"]
        assert ratio == pytest.approx(report["latency_ratio"][key])
    upscale = report["upscale_ms"]
    assert _number(upscale["end_to_end"]) and upscale["end_to_end"] > 0
    assert set(upscale["breakdown"]) == UPSCALE_STAGES
    assert all(_number(ms) and ms >= 0 for ms in upscale["breakdown"].values())
    assert _number(upscale["ratio_to_network"])
    assert _number(report["train_ratio"]) and report["train_ratio"] > 0
    assert set(report["synthesis_ratio"]) == SYNTHESIS_KEYS
    assert all(_number(r) and r > 0 for r in report["synthesis_ratio"].values())
    assert set(report["meets"]) == {
        "latency_ratio",
        "train_ratio",
        "synthesis_ratio",
        "upscale_over_network",
    }
    assert "wrote" in done.stdout


def test_lease_script_rejects_an_unknown_section(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "benchmarks/lease.py", "--device", "cpu", "--sections", "latncy"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2 and "latncy" in done.stderr
