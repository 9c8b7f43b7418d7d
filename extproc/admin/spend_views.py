"""Spend summed over the dimensions a reader asks for.

``read_spend`` returns one row per day and full attribution (identity, team,
project, tool, provider, model); ``group_spend`` sums those rows over any
subset, in the order given, so ``tollgate spend --by team,provider`` prints
one line per team and provider. Amounts stay integer micro-USD.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from extproc.csv_cells import safe_record
from extproc.money import format_usd
from extproc.spend import SpendRow

DIMENSIONS = ("day", "identity", "team", "project", "tool", "provider", "model")
METRICS = (
    "requests",
    "input_tokens",
    "output_tokens",
    "cost_micro_usd",
    "estimated_cost_micro_usd",
)


def parse_by(text: str) -> list[str]:
    """``"team,provider"`` to ``["team", "provider"]``; ``ValueError`` for an
    unknown or repeated dimension."""
    by = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in by if name not in DIMENSIONS]
    if unknown:
        raise ValueError(
            f"unknown spend dimension {unknown[0]!r}; choose from "
            f"{', '.join(DIMENSIONS)}"
        )
    if len(set(by)) != len(by):
        raise ValueError("a spend dimension is named twice")
    return by


def group_spend(rows: list[SpendRow], by: list[str]) -> list[dict[str, Any]]:
    """One dict per distinct combination of ``by``: those dimensions' values
    then the summed ``METRICS``, sorted by the dimensions' values.

    ``by`` empty sums everything into one group (none for no rows). An empty
    value means the dimension does not apply (a caller without a team).
    """
    parse_by(",".join(by))

    groups: dict[tuple[str, ...], dict[str, Any]] = {}
    for row in rows:
        values = tuple(getattr(row, name) for name in by)
        group = groups.get(values)
        if group is None:
            group = {**dict(zip(by, values)), **dict.fromkeys(METRICS, 0)}
            groups[values] = group
        for metric in METRICS:
            group[metric] += getattr(row, metric)

    return [groups[values] for values in sorted(groups)]


def render_groups(groups: list[dict[str, Any]], by: list[str], fmt: str) -> str:
    """``group_spend`` output as ``table``, ``csv`` or ``json`` text."""
    if fmt == "json":
        return json.dumps(groups, indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=[*by, *METRICS])
        writer.writeheader()
        writer.writerows(safe_record(group) for group in groups)
        return out.getvalue()
    return _table(groups, by)


def _table(groups: list[dict[str, Any]], by: list[str]) -> str:
    header = (*by, "requests", "in_tokens", "out_tokens", "cost_usd", "estimated_usd")
    lines = [header] + [
        (
            *(str(g[name]) or "-" for name in by),
            str(g["requests"]),
            str(g["input_tokens"]),
            str(g["output_tokens"]),
            format_usd(g["cost_micro_usd"]),
            format_usd(g["estimated_cost_micro_usd"]),
        )
        for g in groups
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
        for line in lines
    )
    total = sum(g["cost_micro_usd"] for g in groups)
    return f"{text}\ntotal {format_usd(total)} USD over {len(groups)} groups"
