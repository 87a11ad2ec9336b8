"""A GPU lease simulated on the CPU: prepare the carry, run scripts/lease.sh in a copy of the
repository with tiny settings, publish, then a second lease that continues from what was
published (warm restart: the iteration count goes on, only the kept DASR variant trains)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from safetensors import safe_open

from dasrlib.lease import (
    CARRY_LIMIT_BYTES,
    RETURN_FILE_LIMIT_BYTES,
    RETURN_MAX_FILES,
    RETURN_TOTAL_LIMIT_BYTES,
)
from dasrlib.lease.__main__ import DEVICE_COMMAND
from dasrlib.lease.carry import encode_lossless, prepare_carry
from dasrlib.lease.publish import gap_summary, publish_lease
from dasrlib.lease.run import LeaseSettings, check_return_limits

ROOT = Path(__file__).resolve().parents[2]

TINY = [
    "device=cpu",
    "budget_s=400",
    "eval_reserve_s=60",
    "pretrain_share=0.3",
    "max_iterations=3",
    "eval_max_images=1",
    "testset_threads=1",
    "eval_workers=1",
    "train.batch_size=2",
    "train.patch_size=32",
    "train.num_feat=8",
    "train.num_block=1",
    "train.num_experts=2",
    "train.predictor_feat=8",
    "train.queue_size=0",
    "train.compile=false",
    "train.val_images=1",
    "train.val_crop=32",
    "train.val_every=2",
    "train.log_every=1",
    "train.checkpoint_every=100",
    "variants={plain: {predictor_warmup_iters: 0}, warmup: {predictor_warmup_iters: 1}}",
]


def _smooth_image(path: Path, seed: int, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize(size, Image.BICUBIC)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


@pytest.fixture
def shared(tmp_path: Path) -> tuple[Path, Path]:
    train, evaluation = tmp_path / "shared" / "train", tmp_path / "shared" / "eval"
    for i in range(5):
        _smooth_image(train / "A" / f"a{i}.png", i, (96, 80))
    _smooth_image(train / "B" / "b0.jpg", 9, (96, 96))
    for j, name in enumerate(("Set5", "Set14", "B100")):
        _smooth_image(evaluation / name / f"{name.lower()}_1.png", 20 + j, (64, 48))
    return train, evaluation


def _repo_copy(target: Path) -> Path:
    """The working tree as the device gets it: tracked and untracked, not ignored, files."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = ROOT / name.decode()
        if source.is_file():
            (target / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name.decode())
    return target


def _device_call(repo: Path, out: Path, work: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OUT": str(out), "LEASE_WORK": str(work), "PYTHON": sys.executable}
    env.pop("PYTHONPATH", None)
    command = "bash scripts/lease.sh " + " ".join(f"--set '{item}'" for item in TINY)
    return subprocess.run(
        ["bash", "-c", command], cwd=repo, env=env, capture_output=True, text=True, timeout=400
    )


def test_encode_lossless_round_trip(tmp_path: Path) -> None:
    _smooth_image(tmp_path / "a.png", 0, (40, 24))
    Image.open(tmp_path / "a.png").convert("L").save(tmp_path / "g.bmp")
    for name in ("a.png", "g.bmp"):
        out = encode_lossless(tmp_path / name, tmp_path / "enc" / Path(name).stem)
        assert out.suffix == ".webp"
        source = np.asarray(Image.open(tmp_path / name).convert("RGB"))
        assert np.array_equal(np.asarray(Image.open(out).convert("RGB")), source)


def test_settings_reject_unknown_keys() -> None:
    with pytest.raises(ValueError, match="unknown lease setting 'budget'"):
        LeaseSettings.from_overrides({"budget": 10})
    with pytest.raises(ValueError, match="budget_s"):
        LeaseSettings.from_overrides({"budget_s": 600})
    settings = LeaseSettings.from_overrides({"train.batch_size": 8})
    assert settings.train["batch_size"] == 8 and settings.train["export_dtype"] == "fp16"


def test_return_limits(tmp_path: Path) -> None:
    for i in range(RETURN_MAX_FILES + 1):
        (tmp_path / f"f{i}").write_bytes(b"x")
    with pytest.raises(ValueError, match="9 files"):
        check_return_limits(tmp_path)


def test_gap_summary_grew() -> None:
    def rows(dasr: float, sr: float) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "method": ["dasr", "srresnet"],
                "dataset": ["Set5", "Set5"],
                "level": ["weak", "weak"],
                "metric": ["psnr_y_db", "psnr_y_db"],
                "value": [dasr, sr],
            }
        )

    first = gap_summary(rows(30.0, 29.5), None)
    assert first.loc[0, "grew"] == "first" and first.loc[0, "dasr_minus_srresnet"] == 0.5
    later = gap_summary(rows(30.1, 29.8), rows(30.0, 29.5))
    assert later.loc[0, "grew"] == "no" and abs(later.loc[0, "previous_lease"] - 0.5) < 1e-9


@pytest.mark.slow
def test_two_leases_end_to_end(tmp_path: Path, shared: tuple[Path, Path]) -> None:
    train_root, eval_root = shared
    repo = _repo_copy(tmp_path / "repo")
    results = tmp_path / "results" / "models"
    assert DEVICE_COMMAND.startswith("bash scripts/lease.sh") and len(DEVICE_COMMAND) <= 2000

    iterations: list[int] = []
    subsets: list[list[str]] = []
    for lease_index in (1, 2):
        carry = repo / ".carry" / "lease"
        manifest = prepare_carry(
            carry=carry,
            train_root=train_root,
            eval_root=eval_root,
            models_dir=results,
            train_budget_mib=0.025,
            workers=1,
        )
        assert 2 <= manifest["n_train_images"] < 6  # the budget cut the subset
        if lease_index == 2:  # the same sources: every encoded file is reused
            assert manifest["n_reused"] == manifest["n_train_images"] + 3
            assert manifest["train_subset"] == subsets[0]
        subsets.append(manifest["train_subset"])
        carried = sum(p.stat().st_size for p in carry.rglob("*") if p.is_file())
        assert carried <= CARRY_LIMIT_BYTES
        assert (carry / "models" / "dasr.safetensors").is_file() == (lease_index == 2)

        out = tmp_path / f"out{lease_index}"
        out.mkdir()
        started = time.monotonic()
        done = _device_call(repo, out, tmp_path / f"work{lease_index}")
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        assert time.monotonic() - started < 300

        files = sorted(p.name for p in out.iterdir())
        assert files == [
            "dasr.safetensors",
            "eval.csv",
            "lease.json",
            "logs.tar.gz",
            "srresnet.safetensors",
        ]
        sizes = [p.stat().st_size for p in out.iterdir()]
        assert len(sizes) <= RETURN_MAX_FILES and max(sizes) <= RETURN_FILE_LIMIT_BYTES
        assert sum(sizes) <= RETURN_TOTAL_LIMIT_BYTES
        with safe_open(str(out / "dasr.safetensors"), framework="pt") as handle:
            key = next(iter(handle.keys()))
            assert str(handle.get_tensor(key).dtype) == "torch.float16"
            assert json.loads(handle.metadata()["dasrlib.metadata"])["stage"] == "dasr"
        with tarfile.open(out / "logs.tar.gz") as tar:
            names = tar.getnames()
        assert "logs/lease.log" in names and "runs/baseline/metrics.csv" in names

        lease = json.loads((out / "lease.json").read_text())
        assert lease["lease"] == lease_index and lease["error"] is None
        state = lease["state_after"]
        assert state["dasr"]["iterations"] == state["srresnet"]["iterations"]
        iterations.append(state["dasr"]["iterations"])
        eval_rows = pd.read_csv(out / "eval.csv")
        assert set(eval_rows["method"]) == {"bicubic", "srresnet", "dasr"}
        assert set(eval_rows["dataset"]) == {"Set5", "Set14", "B100"}
        assert set(eval_rows["level"]) == {"bicubic", "weak", "standard", "severe"}
        v_mae = eval_rows[eval_rows["metric"] == "v_mae"]
        assert set(v_mae["method"]) == {"dasr"} and len(v_mae) == 12
        assert (eval_rows.loc[eval_rows["metric"] == "psnr_y_db", "n_images"] == 1).all()

        record = publish_lease(out, results)
        assert "DASR minus SRResNet" in record["note"]
        if lease_index == 1:
            assert state["srresnet"]["pretrain_iterations"] == 3
            assert {r["name"] for r in lease["runs"]} == {
                "pretrain",
                "dasr_plain",
                "dasr_warmup",
                "baseline",
            }
            assert len(lease["variant_comparison"]) == 2
        else:
            kept = f"dasr_{state['dasr']['variant']}"
            assert {r["name"] for r in lease["runs"]} == {kept, "baseline"}
            runs = {r["role"]: r for r in lease["runs"]}
            assert runs["dasr"]["start_iteration"] == iterations[0]  # the count continues
            assert set(pd.read_csv(results / "gap_summary.csv")["grew"]) <= {"yes", "no"}

    assert iterations[1] > iterations[0]
    history = json.loads((results / "history.json").read_text())
    assert [lease["lease"] for lease in history["leases"]] == [1, 2]
    assert (results / "curves.png").stat().st_size > 0
    val = pd.read_csv(results / "curves" / "val_dasr.csv")
    assert set(val["lease"]) == {1, 2}
    card = (results / "README.md").read_text()
    assert "Lease 2" in card and "Lease 1" in card
    assert (results / "eval.json").is_file()
    with pytest.raises(ValueError, match="expects lease 3"):
        publish_lease(tmp_path / "out1", results)
