"""CSV cells that a spreadsheet shows as text, never runs as a formula.

Identities, models and labels come from callers; a cell such as
``=HYPERLINK(...)`` would run when finance opens the file. Text that starts
with a formula character is prefixed with an apostrophe (OWASP's advice for
CSV injection); numbers are written as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """``value``, with an apostrophe before text that starts a formula."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def safe_row(row: Iterable[Any]) -> list[Any]:
    return [safe_cell(value) for value in row]


def safe_record(record: Mapping[str, Any]) -> dict[str, Any]:
    return {key: safe_cell(value) for key, value in record.items()}
