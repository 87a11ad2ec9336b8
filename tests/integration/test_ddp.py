"""Data-parallel training under torchrun: two CPU processes (gloo) on a tiny config."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from dasrlib.models.checkpoints import load_model
from dasrlib.models.dasr import DASR
from dasrlib.train.state import load_checkpoint

TINY_DDP = {
    "name": "ddp",
    "stage": "dasr",
    "iterations": 4,
    "batch_size": 4,  # 2 per process
    "patch_size": 32,
    "queue_size": 2,
    "num_feat": 4,
    "num_block": 1,
    "num_experts": 2,
    "predictor_warmup_iters": 2,  # steps 1-2 reach P alone (unused parameters), 3-4 everything
    "predictor_feat": 8,
    "perceptual_weight": 0.0,
    "adversarial_weight": 0.1,
    "disc_num_feat": 4,
    "val_images": 1,
    "val_crop": 32,
    "val_levels": ["bicubic"],
    "log_every": 2,
    "val_every": 4,
    "checkpoint_every": 2,
    "device": "cpu",
    "progress": False,
}


@pytest.mark.ddp
@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path) -> None:
    params = tmp_path / "ddp.yaml"
    params.write_text(yaml.safe_dump({**TINY_DDP, "out_dir": str(tmp_path / "runs")}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "dasrlib.train",
        "--params",
        str(params),
    ]
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = tmp_path / "runs" / "ddp"
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "finished" and record["world_size"] == 2
    assert record["iteration"] == 4
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["iteration"].tolist() == [2, 4]
    assert metrics["loss_total"].notna().all() and (metrics["nonfinite_total"] == 0).all()
    assert "loss_disc" in metrics.columns
    tensors, state = load_checkpoint(run / "checkpoints")
    assert state["iteration"] == 4 and state["world_size"] == 2
    assert any(key.startswith("discriminator.") for key in tensors)
    assert isinstance(load_model(run / "model.safetensors"), DASR)
    assert pd.read_csv(run / "val.csv")["iteration"].max() == 4
    # Rank 0 alone prints the summary; both processes finished.
    assert done.stdout.count("run folder:") == 1
