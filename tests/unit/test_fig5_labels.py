"""Committed Fig. 5 figures name their model without a machine's folders."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from dasrlib.experiments import fig5
from dasrlib.models.loading import ModelChoice, ModelKind
from dasrlib.results import project_path

OUTSIDE = "/srv/elsewhere/results/runs/demo_dasr_short/model.safetensors"


def test_fig5_sweep_title_has_no_absolute_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def fake_sweep(model, image, *, setting, steps, level, precision) -> pd.DataFrame:
        table = pd.DataFrame({"relative": [1.0, 1.0]})
        table.attrs["rank_correlation"], table.attrs["change"] = 1.0, 0.0
        return table

    titles: list[str] = []
    monkeypatch.setattr(fig5, "fig5_sweep", fake_sweep)
    monkeypatch.setattr(fig5, "fig5_sweep_figure", lambda s, out, *, title: titles.append(title))
    inside = project_path("results/runs/demo/model.safetensors")
    image = SimpleNamespace(rgb=torch.zeros(3, 8, 8))  # the fake sweep ignores it
    for source in (OUTSIDE, str(inside)):
        choice = ModelChoice(torch.nn.Identity(), source, ModelKind.LOCAL_RUN)
        fig5.fig5_check(choice, image, tmp_path / "sweep.png", steps=2)
    assert titles == [
        "local run demo_dasr_short/model.safetensors (not a published model)",
        "local run results/runs/demo/model.safetensors (not a published model)",
    ]


def test_portable_label_keeps_sentences_and_relative_paths() -> None:
    assert fig5.portable_label(f"weights {OUTSIDE} (fp16)") == (
        "weights demo_dasr_short/model.safetensors (fp16)"
    )
    assert fig5.portable_label("results/models/dasr/model.safetensors") == (
        "results/models/dasr/model.safetensors"
    )
    assert fig5.portable_label("random weights, seed 0") == "random weights, seed 0"
