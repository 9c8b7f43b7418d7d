"""The month's one bill: every team's and project's spend across providers.

Amounts stay integer micro-USD until they are written out: as exact decimal
USD text (``format_usd``), or converted into the organisation's currency at
one rate. A converted bill rounds each line's metered and estimated amounts
once; every total is the sum of those rounded figures, so that a converted
statement adds up as printed.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from extproc.csv_cells import safe_row
from extproc.money import MICRO_PER_USD, format_usd
from extproc.spend import SpendRow

NONE_LABEL = "(none)"  # a team or project that does not apply
TOTAL_LABEL = "(total)"
CSV_COLUMNS = (
    "team",
    "project",
    "provider",
    "model",
    "metered_usd",
    "estimated_usd",
    "total_usd",
    "requests",
)

MICRO_PLACES = 6  # a converted amount is kept to a millionth of its currency

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


@dataclass(frozen=True, slots=True)
class BillLine:
    """Spend of one team and project on one provider's model in the month.

    ``estimated_micro_usd`` is the part charged on an estimate (no usage
    reported, a cut stream); ``metered_micro_usd`` the rest.
    """

    team: str
    project: str
    provider: str
    model: str
    metered_micro_usd: int
    estimated_micro_usd: int
    requests: int

    @property
    def total_micro_usd(self) -> int:
        return self.metered_micro_usd + self.estimated_micro_usd


@dataclass(frozen=True, slots=True)
class Bill:
    """One month's statement, lines sorted by team, project, provider, model."""

    month: str
    lines: tuple[BillLine, ...]

    @property
    def metered_micro_usd(self) -> int:
        return sum(line.metered_micro_usd for line in self.lines)

    @property
    def estimated_micro_usd(self) -> int:
        return sum(line.estimated_micro_usd for line in self.lines)

    @property
    def total_micro_usd(self) -> int:
        return sum(line.total_micro_usd for line in self.lines)

    @property
    def requests(self) -> int:
        return sum(line.requests for line in self.lines)

    def by_team(self) -> list[BillLine]:
        """One subtotal line per team (project, provider and model empty)."""
        return _subtotals(self.lines, lambda line: line.team)


@dataclass(frozen=True, slots=True)
class Converted:
    """Amounts in another currency, as integer counts of its smallest printed
    unit: metered and estimated each rounded once, the total their sum."""

    metered: int
    estimated: int

    @property
    def total(self) -> int:
        return self.metered + self.estimated

    def __add__(self, other: Converted) -> Converted:
        return Converted(
            self.metered + other.metered, self.estimated + other.estimated
        )


def converted(line: BillLine, rate: Decimal, places: int = MICRO_PLACES) -> Converted:
    """``line``'s amounts at ``rate`` per USD, in units of ``10**-places``."""
    return Converted(
        in_units(line.metered_micro_usd, rate, places),
        in_units(line.estimated_micro_usd, rate, places),
    )


def converted_sum(amounts: Iterable[Converted]) -> Converted:
    """The column sums of rounded amounts: what a reader adding them gets."""
    return sum(amounts, Converted(0, 0))


def build_bill(rows: Iterable[SpendRow], month: str) -> Bill:
    """The bill of ``month`` (``YYYY-MM``) from daily spend rows; rows of
    other months are left out. ``ValueError`` for a malformed month."""
    check_month(month)
    in_month = (row for row in rows if row.day.startswith(month + "-"))
    return Bill(month, bill_lines(in_month))


def bill_lines(rows: Iterable[SpendRow]) -> tuple[BillLine, ...]:
    """``rows`` summed by team, project, provider and model, in bill order."""
    totals: dict[tuple[str, str, str, str], list[int]] = {}
    for row in rows:
        key = (row.team, row.project, row.provider, row.model)
        sums = totals.setdefault(key, [0, 0, 0])
        sums[0] += row.cost_micro_usd - row.estimated_cost_micro_usd
        sums[1] += row.estimated_cost_micro_usd
        sums[2] += row.requests

    return tuple(
        BillLine(team, project, provider, model, metered, estimated, requests)
        for (team, project, provider, model), (metered, estimated, requests) in sorted(
            totals.items(), key=lambda item: _order(item[0])
        )
    )


def bill_csv(bill: Bill, *, currency: str = "USD", rate: Decimal = Decimal(1)) -> str:
    """``bill`` as CSV for finance: one row per line, then a ``(total)`` row.

    USD columns are exact. For another ``currency``, three more columns give
    the amounts converted at ``rate`` (units of ``currency`` per USD), each
    line rounded once and the total row the sum of the lines above it.
    """
    converted_columns = currency.upper() != "USD"
    extra = [f"{kind}_{currency.lower()}" for kind in ("metered", "estimated", "total")]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*CSV_COLUMNS, *(extra if converted_columns else [])])

    in_currency = [converted(line, rate) for line in bill.lines]
    total = BillLine(
        TOTAL_LABEL,
        "",
        "",
        "",
        bill.metered_micro_usd,
        bill.estimated_micro_usd,
        bill.requests,
    )
    rows = [*zip(bill.lines, in_currency), (total, converted_sum(in_currency))]
    for line, amounts in rows:
        row = _csv_row(line, is_total=line is total)
        if converted_columns:
            row += [
                units_text(units, MICRO_PLACES)
                for units in (amounts.metered, amounts.estimated, amounts.total)
            ]
        writer.writerow(safe_row(row))

    return out.getvalue()


def _csv_row(line: BillLine, *, is_total: bool) -> list[object]:
    return [
        line.team or NONE_LABEL,
        line.project or ("" if is_total else NONE_LABEL),
        line.provider,
        line.model,
        format_usd(line.metered_micro_usd),
        format_usd(line.estimated_micro_usd),
        format_usd(line.total_micro_usd),
        line.requests,
    ]


def in_units(micro_usd: int, rate: Decimal, places: int = MICRO_PLACES) -> int:
    """``micro_usd`` at ``rate`` per USD as an integer count of ``10**-places``
    of the other currency (banker's rounding, once)."""
    amount = (Decimal(micro_usd) * rate / MICRO_PER_USD).scaleb(places)
    return int(amount.to_integral_value(rounding=ROUND_HALF_EVEN))


def units_text(units: int, places: int) -> str:
    """An integer count of ``10**-places`` as exact decimal text."""
    return str(Decimal(units).scaleb(-places).quantize(Decimal(1).scaleb(-places)))


def convert(micro_usd: int, rate: Decimal) -> Decimal:
    """``micro_usd`` in another currency at ``rate`` per USD, to the micro
    unit (banker's rounding, once)."""
    return Decimal(units_text(in_units(micro_usd, rate), MICRO_PLACES))


def check_month(month: str) -> tuple[int, int]:
    """(year, month) of ``YYYY-MM``; ``ValueError`` otherwise."""
    match = _MONTH.match(month)
    if match is None:
        raise ValueError(f"month must be YYYY-MM, not {month!r}")
    return int(match.group(1)), int(match.group(2))


def label(value: str) -> str:
    """A team or project as printed: ``(none)`` when it does not apply."""
    return value or NONE_LABEL


def _order(key: tuple[str, str, str, str]) -> tuple[tuple[bool, str], ...]:
    # Named teams and projects first, the unattributed "(none)" after them.
    return tuple((value == "", value) for value in key)


def _subtotals(
    lines: Iterable[BillLine], key: Callable[[BillLine], str]
) -> list[BillLine]:
    sums: dict[str, list[int]] = {}
    for line in lines:
        entry = sums.setdefault(key(line), [0, 0, 0])
        entry[0] += line.metered_micro_usd
        entry[1] += line.estimated_micro_usd
        entry[2] += line.requests
    return [
        BillLine(name, "", "", "", metered, estimated, requests)
        for name, (metered, estimated, requests) in sorted(
            sums.items(), key=lambda item: (item[0] == "", item[0])
        )
    ]
