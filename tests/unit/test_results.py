"""Long-format results files and their provenance sidecar."""

from __future__ import annotations

import json
import math
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from dasrlib import results as results_module
from dasrlib.results import RESULT_COLUMNS, read_results, run_metadata, sidecar_path, write_results


def _rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image": ["a", ""],
            "method": ["bicubic", "bicubic"],
            "dataset": ["set", "set"],
            "level": ["weak", "weak"],
            "metric": ["psnr_y_db", "psnr_y_db"],
            "value": [25.5, 25.5],
            "n_images": [1, 1],
            "paper_value": [float("nan"), float("nan")],
        }
    )


def test_run_metadata_records_provenance() -> None:
    meta = run_metadata(config={"iterations": 3, "levels": ("weak",)}, seed=7, device="cpu")
    assert meta["seed"] == 7
    assert meta["config"] == {"iterations": 3, "levels": ["weak"]}
    assert meta["device"]["device"] == "cpu"
    assert meta["versions"]["torch"] and meta["versions"]["numpy"] and meta["versions"]["python"]
    assert meta["timestamp_utc"].endswith("+00:00")
    # This test runs from the repository checkout, so the commit is known.
    assert meta["git_commit"] is not None and len(meta["git_commit"]) == 40
    assert isinstance(meta["git_dirty"], bool)
    json.dumps(meta)  # serialisable as is


def test_the_recorded_command_names_no_machine_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    repo = Path(results_module.__file__).resolve().parent.parent
    temporary = Path(tempfile.gettempdir()).resolve()
    argv = [
        str(repo / "dasrlib" / "campaign" / "__main__.py"),
        "-f",
        f"{temporary}/k.json",
        "--x=1",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    assert run_metadata()["command"] == "dasrlib/campaign/__main__.py -f $TMPDIR/k.json --x=1"


def test_the_sidecar_names_no_machine_paths(tmp_path) -> None:
    repo = Path(results_module.__file__).resolve().parent.parent
    temporary = Path(tempfile.gettempdir()).resolve()
    meta = {
        "testsets": {"dir": f"{repo}/data/testsets/set5", "hr_root": f"{repo}/../beside/x"},
        "weights": [f"{temporary}/w.safetensors", 3],
    }
    write_results(_rows(), tmp_path / "t.csv", metadata=meta)
    _, side = read_results(tmp_path / "t.csv")
    assert side["testsets"] == {"dir": "data/testsets/set5", "hr_root": "../beside/x"}
    assert side["weights"] == ["$TMPDIR/w.safetensors", 3]


def test_write_results_round_trip(tmp_path) -> None:
    csv = tmp_path / "sub" / "table.csv"
    meta = run_metadata(seed=1, device="cpu")
    meta["note"] = math.inf
    assert write_results(_rows(), csv, metadata=meta) == csv
    frame, side = read_results(csv)
    assert list(frame.columns[: len(RESULT_COLUMNS)]) == list(RESULT_COLUMNS)
    assert list(frame.columns[len(RESULT_COLUMNS) :]) == ["image"]
    assert frame["value"].tolist() == [25.5, 25.5]
    assert side["n_rows"] == 2 and side["csv"] == "table.csv" and side["seed"] == 1
    assert side["note"] == "inf"
    assert sidecar_path(csv) == tmp_path / "sub" / "table.json"
    # No temporary files are left behind.
    assert sorted(p.name for p in csv.parent.iterdir()) == ["table.csv", "table.json"]


def test_write_results_rejects_missing_columns(tmp_path) -> None:
    with pytest.raises(ValueError, match="n_images"):
        write_results(_rows().drop(columns="n_images"), tmp_path / "t.csv", metadata={})
    assert not (tmp_path / "t.csv").exists()


def test_write_results_removes_temporaries_a_killed_writer_left(tmp_path) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    stale = tmp_path / f".table.csv.{int(done.stdout)}.atomic-q.tmp"
    stale.write_bytes(b"")
    write_results(_rows(), tmp_path / "table.csv", metadata=run_metadata(seed=1, device="cpu"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv", "table.json"]
