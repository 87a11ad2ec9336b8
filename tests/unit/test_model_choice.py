"""Which model runs: one rule (`choose_model`) for the ``dasr`` command and the slider app."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dasrlib.cli import main
from dasrlib.io import write_png
from dasrlib.models.checkpoints import save_weights
from dasrlib.models.dasr import DASR
from dasrlib.models.experts import SRResNet
from dasrlib.models.loading import (
    DEFAULT_MODEL_RELATIVE_PATH,
    LOCAL_RUNS_RELATIVE_PATH,
    MODEL_ROOT_ENV,
    ModelKind,
    ModelNotFoundError,
    choose_model,
)


def _dasr() -> DASR:
    generator = torch.Generator().manual_seed(0)
    return DASR(num_feat=8, num_block=2, predictor_feat=8, generator=generator).eval()


@pytest.fixture
def clone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty repository: nothing published, no local runs; an input image in ``in.png``."""
    monkeypatch.setenv(MODEL_ROOT_ENV, str(tmp_path))
    monkeypatch.chdir(tmp_path)
    write_png(tmp_path / "in.png", torch.rand(3, 12, 12, generator=torch.Generator()))
    return tmp_path


def _upscale(clone: Path, *extra: str) -> int:
    return main(["upscale", str(clone / "in.png"), "-o", str(clone / "out"), *extra])


def test_without_a_model_the_cli_uses_the_newest_local_dasr_run_and_says_so(
    clone: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = clone / LOCAL_RUNS_RELATIVE_PATH
    save_weights(_dasr(), runs / "demo" / "model.safetensors")
    save_weights(SRResNet(num_feat=8, num_block=1), runs / "demo_pretrain" / "model.safetensors")
    assert _upscale(clone) == 0
    err = capsys.readouterr().err
    assert f"model: {runs / 'demo' / 'model.safetensors'}" in err
    assert "newest local training run" in err
    assert (clone / "out" / "in_x4.png").is_file()


def test_the_published_model_comes_before_local_runs(clone: Path) -> None:
    save_weights(_dasr(), clone / LOCAL_RUNS_RELATIVE_PATH / "demo" / "model.safetensors")
    save_weights(_dasr(), clone / DEFAULT_MODEL_RELATIVE_PATH)
    choice = choose_model()
    assert choice.kind is ModelKind.PUBLISHED and choice.adaptive
    assert choice.source == str(clone / DEFAULT_MODEL_RELATIVE_PATH)


def test_a_plain_sr_checkpoint_is_said_to_be_not_degradation_adaptive(
    clone: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = clone / "srresnet.safetensors"
    save_weights(SRResNet(num_feat=8, num_block=1), checkpoint)
    assert _upscale(clone, "--model", str(checkpoint)) == 0
    err = capsys.readouterr().err
    assert "SRResNet is not degradation-adaptive" in err


def test_no_model_anywhere_names_where_training_writes_and_what_is_published(
    clone: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_weights(SRResNet(num_feat=8, num_block=1), clone / "results/runs/x/model.safetensors")
    assert _upscale(clone) == 2
    err = capsys.readouterr().err
    assert "results/runs/<name>/model.safetensors" in err
    assert str(DEFAULT_MODEL_RELATIVE_PATH) in err
    with pytest.raises(ModelNotFoundError):
        choose_model()
    assert choose_model(allow_random=True).random
