"""An empty table cell says why and how to fill it; a smoke table says so in its first line."""

from __future__ import annotations

import re

import pytest

from dasrlib.experiments import table1, table2
from dasrlib.paper import PAPER_TABLE1


@pytest.mark.parametrize("name", sorted(set(PAPER_TABLE1)))
def test_every_table1_column_says_where_its_weights_are(name: str) -> None:
    hint = table1.TABLE1_HOW_TO_FILL[name]
    assert re.search(r"https://\S+", hint), hint  # the source of the weights
    # a command, or the folder / parameter to put them in
    assert any(word in hint for word in ("python -m", "curl", "data/weights/", "methods")), hint


def test_ikc_says_why_it_is_empty() -> None:
    assert "no runner" in table1.TABLE1_HOW_TO_FILL["IKC"]


def test_table2_title_names_a_smoke_run_first() -> None:
    smoke = table2.table2_title({"SRResNet": 1, "DASR": 1})
    assert smoke.startswith("SMOKE TEST") and "mean nothing next to the paper's" in smoke
    assert "SRResNet 1, DASR 1" in smoke and str(table2.PAPER_ITERATIONS) in smoke
    short = table2.table2_title({"SRResNet": 2000, "DASR": 2000})
    assert short.startswith("SHORT BUDGET")
    full = table2.table2_title({"SRResNet": table2.PAPER_ITERATIONS})
    assert full == table2.TABLE2_TITLE
