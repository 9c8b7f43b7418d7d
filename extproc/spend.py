"""Reading booked spend back out of Redis, by identity, provider, model, day."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from datetime import date, timedelta

import redis

from extproc.budgets.store import Keys
from extproc.csv_cells import safe_record
from extproc.money import format_money
from extproc.policy.model import Currency

_DIMENSIONS = ("identity", "team", "project", "tool", "provider", "model")
_METRICS = (
    "cost_micro_usd",
    "estimated_cost_micro_usd",
    "requests",
    "input_tokens",
    "output_tokens",
)


@dataclass(frozen=True, slots=True)
class SpendRow:
    day: str
    identity: str
    team: str
    project: str
    tool: str
    provider: str
    model: str
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_micro_usd: int = 0
    estimated_cost_micro_usd: int = 0


def read_spend(
    client: redis.Redis, tenant: str, first: date, last: date
) -> list[SpendRow]:
    """Every (day, identity, provider, model) row from ``first`` to ``last``."""
    keys = Keys(tenant)
    rows: list[SpendRow] = []
    day = first
    while day <= last:
        raw = client.hgetall(keys.spend(day.isoformat()))
        rows += _rows(day.isoformat(), raw)
        day += timedelta(days=1)
    return sorted(rows, key=lambda r: (r.day, r.identity, r.tool, r.provider, r.model))


def render(rows: list[SpendRow], fmt: str, currency: Currency | None = None) -> str:
    """``rows`` as ``table`` (amounts in ``currency``), ``csv`` or ``json``
    (amounts in integer micro-USD, as their field names say) text."""
    if fmt == "json":
        return json.dumps([asdict(r) for r in rows], indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(SpendRow.__dataclass_fields__))
        writer.writeheader()
        writer.writerows(safe_record(asdict(r)) for r in rows)
        return out.getvalue()
    return _table(rows, currency or Currency())


def _rows(day: str, raw: dict[bytes, bytes]) -> list[SpendRow]:
    grouped: dict[str, dict[str, int]] = {}
    for field, value in raw.items():
        dims, _, metric = field.decode().rpartition("|")
        if metric in _METRICS:
            grouped.setdefault(dims, {})[metric] = int(value)
    rows = []
    for dims, metrics in grouped.items():
        values = json.loads(dims)
        if len(values) == len(_DIMENSIONS):  # custom label rows are kept apart
            rows.append(SpendRow(day, *values, **metrics))
    return rows


def _table(rows: list[SpendRow], currency: Currency) -> str:
    def money(micro_usd: int) -> str:
        return format_money(micro_usd, currency.code, currency.per_usd).split(" ")[0]

    header = (
        "day",
        "identity",
        "team",
        "project",
        "tool",
        "provider",
        "model",
        "requests",
        "in_tokens",
        "out_tokens",
        f"cost_{currency.code.lower()}",
        f"estimated_{currency.code.lower()}",
    )
    lines = [header] + [
        (
            r.day,
            r.identity,
            r.team or "-",
            r.project or "-",
            r.tool or "-",
            r.provider,
            r.model,
            str(r.requests),
            str(r.input_tokens),
            str(r.output_tokens),
            money(r.cost_micro_usd),
            money(r.estimated_cost_micro_usd),
        )
        for r in rows
    ]
    total = sum(r.cost_micro_usd for r in rows)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines
    )
    total_text = format_money(total, currency.code, currency.per_usd)
    return f"{text}\ntotal {total_text} over {len(rows)} rows"
