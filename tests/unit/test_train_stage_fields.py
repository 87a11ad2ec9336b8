"""A training field that has no effect in the chosen stage is an error when the user set it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dasrlib.config import ConfigError
from dasrlib.train.cli import main as train_main
from dasrlib.train.config import config_from_parameters, explicit_names, fields_without_effect


def test_pretrain_iterations_in_a_pretrain_file_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = tmp_path / "pretrain.yaml"
    params.write_text("stage: pretrain\npretrain_iterations: 100000\niterations: 10\n")
    assert train_main(["--params", str(params), "--print-config"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line, no traceback
    assert "pretrain_iterations = 100000" in err and "stage 'pretrain'" in err
    assert "both" in err  # where it would have an effect
    # the same file without the field builds; --set counts as explicit too
    params.write_text("stage: pretrain\niterations: 10\n")
    assert train_main(["--params", str(params), "--print-config"]) == 0
    capsys.readouterr()
    assert train_main(["--params", str(params), "--set", "num_experts=3", "--print-config"]) == 2
    assert "num_experts = 3" in capsys.readouterr().err


def test_explicit_names_cover_flat_dotted_sections_and_overrides() -> None:
    names = explicit_names(
        {"stage": "dasr", "model": {"num_experts": 3}, "overrides": {"loss.pixel_weight": 1.0}},
        {"optimiser.predictor_warmup_iters": 5},
    )
    assert names == {"stage", "num_experts", "pixel_weight", "predictor_warmup_iters"}
    assert fields_without_effect("pretrain", names) == ["num_experts", "predictor_warmup_iters"]
    assert fields_without_effect("dasr", names) == []
    assert fields_without_effect("baseline", {"regression_weight", "perceptual_weight"}) == [
        "regression_weight"
    ]
    with pytest.raises(ConfigError, match="regression_weight"):
        config_from_parameters(
            {"stage": "baseline", "regression_weight": 2.0}, explicit={"regression_weight"}
        )


def test_notebook_defaults_warn_instead_of_failing(caplog: pytest.LogCaptureFixture) -> None:
    """A notebook's namespace mixes its own defaults with a file's values: a warning, no error."""
    namespace = {"stage": "pretrain", "pretrain_iterations": 8, "num_experts": 5}
    with caplog.at_level(logging.WARNING, logger="dasrlib.train.config"):
        config = config_from_parameters(namespace)
    assert config.stage == "pretrain"
    # pretrain_iterations differs from the default (0): named; num_experts is the default: not
    assert "pretrain_iterations = 8" in caplog.text and "num_experts" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dasrlib.train.config"):
        config_from_parameters({"stage": "both", "pretrain_iterations": 8, "num_experts": 3})
    assert caplog.text == ""
