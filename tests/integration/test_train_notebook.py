"""notebooks/train.ipynb end to end under papermill with tiny parameters."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml

from dasrlib.config import ConfigError
from dasrlib.train import config as train_config
from dasrlib.train.config import TrainConfig, config_from_parameters
from dasrlib.train.state import load_checkpoint

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "train.ipynb"
PARAMS = NOTEBOOK.parent / "params"


def notebook_parameters() -> dict:
    """The literals of the notebook's `parameters` cell."""
    notebook = json.loads(NOTEBOOK.read_text())
    cell = next(c for c in notebook["cells"] if "parameters" in c["metadata"].get("tags", []))
    values: dict = {}
    exec("".join(cell["source"]), {}, values)  # literals only, by the notebook's rule
    return values


@pytest.mark.parametrize("name", ["demo.yaml", "paper.yaml"])
def test_param_files_set_every_notebook_parameter(name) -> None:
    """The notebook and `python -m dasrlib.train --params` then build the same config."""
    params = yaml.safe_load((PARAMS / name).read_text())
    assert set(params) == set(notebook_parameters())
    config = config_from_parameters(params)
    assert isinstance(config, TrainConfig)


def _notebook_namespace(**injected) -> dict:
    """The notebook's namespace after its imports, parameters and papermill's injected cell."""
    notebook = json.loads(NOTEBOOK.read_text())
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    namespace: dict = {}
    for cell in code[:2]:  # imports, parameters
        exec("".join(cell["source"]), namespace)
    namespace.update(injected)
    return namespace


def test_notebook_passes_every_parameter_to_the_config() -> None:
    """The config cell takes the notebook's parameters as a whole: none is forgotten."""
    parameters = train_config.notebook_parameters(_notebook_namespace())
    assert parameters == notebook_parameters()
    source = "".join("".join(c["source"]) for c in json.loads(NOTEBOOK.read_text())["cells"])
    assert "config_from_parameters(notebook_parameters(globals()))" in source


def test_an_unknown_injected_parameter_is_an_error() -> None:
    """A parameter file's misspelt name reaches the config and fails there, naming it."""
    namespace = _notebook_namespace(num_experst=5)
    with pytest.raises(ConfigError, match="num_experst"):
        config_from_parameters(train_config.notebook_parameters(namespace))


def test_paper_schedule() -> None:
    config = config_from_parameters(yaml.safe_load((PARAMS / "paper.yaml").read_text()))
    schedule, data, loss = config.schedule, config.data, config.loss
    assert (schedule.iterations, data.batch_size, data.patch_size) == (500_000, 24, 256)
    assert (config.model.num_experts, config.optimiser.lr, config.optimiser.ema_decay) == (
        5,
        1e-4,
        0.999,
    )
    weights = (loss.pixel_weight, loss.regression_weight)
    assert weights + (loss.perceptual_weight, loss.adversarial_weight) == (1, 1, 1, 0.1)


@pytest.mark.notebook
@pytest.mark.slow
def test_train_notebook_writes_its_run_folders(tmp_path) -> None:
    import papermill

    out_dir = tmp_path / "runs"
    parameters = {
        "name": "nb",
        "out_dir": str(out_dir),
        "stage": "both",
        "pretrain_iterations": 30,
        "iterations": 4,
        "batch_size": 4,
        "patch_size": 32,
        "queue_size": 4,
        "num_experts": 2,
        "num_feat": 8,
        "num_block": 1,
        "lr": 1e-3,
        "val_crop": 48,
        "log_every": 5,
        "device": "cpu",
        "overrides": {"predictor_feat": 8},
    }
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    papermill.execute_notebook(
        str(NOTEBOOK),
        str(tmp_path / "train.ipynb"),
        parameters=parameters,
        cwd=str(NOTEBOOK.parent),
        kernel_name="python3",
        progress_bar=False,
    )
    pretrain, dasr = out_dir / "nb_pretrain", out_dir / "nb"
    for run in (pretrain, dasr):
        assert (run / "model.safetensors").is_file()
        _, state = load_checkpoint(run / "checkpoints")
        assert state["iteration"] == (30 if run == pretrain else 4)
    # What the run wrote, not how noisy 30 iterations of random levels were (learning itself is
    # tested in tests/unit/test_learning.py): one row per log interval, finite positive losses.
    metrics = pd.read_csv(pretrain / "metrics.csv")
    assert metrics["iteration"].tolist() == [5, 10, 15, 20, 25, 30]
    assert metrics["loss_total"].between(0, 1).all(), metrics["loss_total"].tolist()
    val = pd.read_csv(dasr / "val.csv")
    assert set(val["level"]) == {"bicubic", "weak", "standard", "severe"}
    assert (dasr / "training_curves.png").stat().st_size > 10_000
    assert (dasr / "example_standard.png").stat().st_size > 10_000
    record = json.loads((dasr / "run.json").read_text())
    assert record["config"]["init_from"].endswith("nb_pretrain")
