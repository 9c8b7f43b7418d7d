"""CSV cells from callers' text cannot become spreadsheet formulas."""

from __future__ import annotations

import pytest

from extproc.csv_cells import safe_cell, safe_record


@pytest.mark.parametrize("text", ["=HYPERLINK(1)", "+1", "-2+3", "@SUM(A1)", "\tx"])
def test_text_that_starts_a_formula_gets_an_apostrophe(text) -> None:
    assert "'" + text == safe_cell(text)


@pytest.mark.parametrize("value", ["alice", "gpt-4o", "", 0, -5, 12])
def test_plain_text_and_numbers_are_unchanged(value) -> None:
    assert value == safe_cell(value)


def test_every_value_of_a_record_is_made_safe() -> None:
    assert {"identity": "'=x", "requests": 3} == safe_record(
        {"identity": "=x", "requests": 3}
    )
