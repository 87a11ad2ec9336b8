"""The campaign's models as table columns: Table 1 takes the published DASR's evaluation where
its own run has no DASR weights, only for the same test sets, and labels it with the scale."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from dasrlib.campaign.publish import HISTORY_FORMAT
from dasrlib.campaign.tables import published_column, with_published_column
from dasrlib.paper import PAPER_TABLE1, paper_value

COLUMNS = ["method", "dataset", "level", "metric", "value", "n_images", "paper_value", "image"]


def _rows(method: str, value: float, dataset: str = "Set5") -> pd.DataFrame:
    rows = [
        [method, dataset, "weak", "psnr_y_db", value, 1, math.nan, "baby", "image", ""],
        [method, dataset, "weak", "psnr_y_db", value, 1, math.nan, "", "mean", ""],
    ]
    return pd.DataFrame(rows, columns=[*COLUMNS, "aggregate", "note"])


def _publish(models: Path, rows: pd.DataFrame) -> None:
    models.mkdir(parents=True)
    rows.to_csv(models / "eval.csv", index=False)
    (models / "eval.json").write_text(json.dumps({"testsets": {"Set5": "data/testsets/set5"}}))
    plan = {"stage_iterations": 30000, "patch_size": 128, "batch_size": 16}
    state = {"pretrain": {"iterations": 30000}, "dasr": {"iterations": 4000}}
    history = {"format": HISTORY_FORMAT, "budgets": [{"plan": plan}] * 5, "state": state}
    (models / "history.json").write_text(json.dumps(history))


def test_a_run_without_dasr_takes_the_published_column_with_its_scale(tmp_path: Path) -> None:
    _publish(tmp_path / "models", pd.concat([_rows("bicubic", 27.0), _rows("dasr", 28.5)]))
    published = published_column(
        tmp_path / "models", method="dasr", column="DASR", paper=PAPER_TABLE1
    )
    assert published is not None and "campaign budget 5" in published.scale
    assert "DASR 4000" in published.scale
    run = pd.concat([_rows("Bicubic", 27.0), _rows("DASR", math.nan).iloc[1:]])

    joined, note = with_published_column(run, "data/testsets/set5", published)
    dasr = joined[joined["method"] == "DASR"]
    assert list(dasr["value"]) == [28.5, 28.5] and list(dasr["aggregate"]) == ["image", "mean"]
    assert dasr["paper_value"].iloc[1] == paper_value(PAPER_TABLE1, "DASR", "weak", "psnr_y_db")
    assert math.isnan(dasr["paper_value"].iloc[0])  # the paper's value only beside a mean
    assert list(joined[joined["method"] == "Bicubic"]["value"]) == [27.0, 27.0]
    assert note is not None and "campaign budget 5" in note and "at most 0.0e+00 dB" in note

    # Other test sets, or a run with its own DASR values, keep their rows.
    kept, note = with_published_column(run, "data/testsets/other", published)
    assert kept is run and note is None
    own = pd.concat([_rows("Bicubic", 27.0), _rows("DASR", 29.0)])
    kept, note = with_published_column(own, "data/testsets/set5", published)
    assert kept is own and note is None
    # The same folder holding other images (bicubic 0.5 dB apart): refused, saying why.
    rebuilt = pd.concat([_rows("Bicubic", 27.5), _rows("DASR", math.nan).iloc[1:]])
    kept, note = with_published_column(rebuilt, "data/testsets/set5", published)
    assert (
        kept is rebuilt and note is not None and "differs from this run's by up to 0.500 dB" in note
    )


def test_no_published_dasr_no_column(tmp_path: Path) -> None:
    assert published_column(tmp_path, method="dasr", column="DASR", paper=PAPER_TABLE1) is None
    _publish(tmp_path / "models", _rows("srresnet", 28.0))  # a pretrain-only budget
    models = tmp_path / "models"
    assert published_column(models, method="dasr", column="DASR", paper=PAPER_TABLE1) is None
