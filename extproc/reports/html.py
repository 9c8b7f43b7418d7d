"""One self-contained HTML page of spend: a chart, the top spenders, the bill.

The page has inline CSS and an inline SVG chart drawn here; it loads
nothing, runs no script and reads the same with or without a network.
Amounts are integer micro-USD until they are printed, converted into the
organisation's currency at one rate. The summary and the bill round each
bill line's metered and estimated amounts to the cent once and add up those
printed figures, so that every total is the sum of what is shown. Chart
geometry uses floats: they place pixels, they never hold an amount that is
printed or summed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from html import escape

from extproc.reports.bill import (
    Bill,
    BillLine,
    Converted,
    bill_lines,
    convert,
    converted,
    converted_sum,
    in_units,
    label,
)
from extproc.spend import SpendRow

DIMENSIONS = ("team", "project", "identity", "tool", "provider", "model")
MAX_SERIES = 8  # named series in the chart; the rest are stacked as "other"
TOP_SPENDERS = 10

# Distinct under the common colour-vision deficiencies, in stacking order.
_PALETTE = (
    "#1f6fb5",
    "#e5a11a",
    "#2a9d72",
    "#c9487f",
    "#5bb7e8",
    "#d2612a",
    "#7b61c4",
    "#8c7a3c",
)
_OTHER_COLOUR = "#b9bec7"
_OTHER = "other"

_CENT_PLACES = 2

_CHART_WIDTH, _CHART_HEIGHT = 1120, 380
_MARGIN_LEFT, _MARGIN_RIGHT, _MARGIN_TOP, _MARGIN_BOTTOM = 84, 16, 16, 44


@dataclass(frozen=True, slots=True)
class _Money:
    """How amounts are printed: currency code and rate per USD."""

    currency: str
    rate: Decimal

    def text(self, micro_usd: int) -> str:
        return self.shown(self.cents(micro_usd), exact=micro_usd)

    def html(self, micro_usd: int) -> str:
        return escape(self.text(micro_usd))

    def cents(self, micro_usd: int) -> int:
        """``micro_usd`` in hundredths of the currency, rounded once."""
        return in_units(micro_usd, self.rate, _CENT_PLACES)

    def line(self, line: BillLine) -> Converted:
        """A bill line's metered and estimated amounts in cents."""
        return converted(line, self.rate, _CENT_PLACES)

    def shown(self, cents: int, *, exact: int) -> str:
        """``cents`` as printed; ``< 0.01`` when they round away the
        nonzero ``exact`` micro-USD."""
        if exact and not cents:
            return "< 0.01"
        whole, rest = divmod(abs(cents), 100)
        return f"{'-' if cents < 0 else ''}{whole:,}.{rest:02d}"

    def apportion(self, parts: dict[str, int], total_cents: int) -> dict[str, int]:
        """``parts`` (micro-USD) in cents that add up to ``total_cents``, the
        page's printed total: each part rounded down, and the cents left
        over given to the largest remainders. A printed breakdown then sums
        to the printed total, as a reader checks it."""
        exact = {name: self.rate * amount / 10_000 for name, amount in parts.items()}
        cents = {name: math.floor(value) for name, value in exact.items()}
        left_over = total_cents - sum(cents.values())
        if not 0 <= left_over <= len(cents):
            return {name: self.cents(amount) for name, amount in parts.items()}
        ranked = sorted(exact, key=lambda name: (cents[name] - exact[name], name))
        for name in ranked[:left_over]:
            cents[name] += 1
        return cents

    def value(self, micro_usd: int) -> float:
        """Chart height only; never printed."""
        return float(convert(micro_usd, self.rate))


def render_html(
    rows: Sequence[SpendRow],
    *,
    dimension: str = "team",
    title: str = "Tollgate spend",
    currency: str = "USD",
    rate: Decimal = Decimal(1),
    bill: Bill | None = None,
    first: date | None = None,
    last: date | None = None,
) -> str:
    """The page for ``rows``: daily spend stacked by ``dimension`` (one of
    ``DIMENSIONS``), the top spenders and, when given, ``bill``. ``first``
    and ``last`` widen the chart to days without spend."""
    if dimension not in DIMENSIONS:
        raise ValueError(
            f"dimension must be one of {', '.join(DIMENSIONS)}, not {dimension!r}"
        )
    money = _Money(currency.upper(), rate)
    days = _days(rows, first, last)
    printed = converted_sum(money.line(line) for line in bill_lines(rows))

    sections = [
        _summary(rows, days, money, printed),
        _chart_section(rows, days, dimension, money, printed.total),
        _top_spenders(rows, money, printed.total),
    ]
    if bill is not None:
        sections.append(_bill_section(bill, money))
    sections.append(_footnote(money))

    return _page(title, days, "\n".join(sections))


# Page frame.


def _page(title: str, days: list[date], body: str) -> str:
    period = f"{days[0].isoformat()} to {days[-1].isoformat()}" if days else "no spend"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<header><h1>{escape(title)}</h1><p class="period">{escape(period)}</p></header>
{body}
</main>
</body>
</html>
"""


_CSS = """
:root { color-scheme: light; --ink: #1d2330; --muted: #5d6678; --rule: #dfe3ea;
  --panel: #f6f7f9; --accent: #1f6fb5; }
* { box-sizing: border-box; }
body { margin: 0; background: #fff; color: var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans",
  sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 28px 30px 40px; }
header { display: flex; align-items: baseline; justify-content: space-between;
  border-bottom: 2px solid var(--ink); margin-bottom: 20px; }
h1 { font-size: 24px; margin: 0 0 8px; }
h2 { font-size: 17px; margin: 30px 0 10px; }
.period { color: var(--muted); margin: 0; }
.cards { display: grid; grid-template-columns: repeat(4, 1fr); gap: 12px; }
.card { background: var(--panel); border-radius: 6px; padding: 12px 14px; }
.card .label { color: var(--muted); font-size: 12px; text-transform: uppercase;
  letter-spacing: .04em; }
.card .value { font-size: 22px; font-weight: 600; font-variant-numeric: tabular-nums; }
.card .note { color: var(--muted); font-size: 12px; }
figure { margin: 0; }
svg.chart { width: 100%; height: auto; display: block; }
svg.chart text { font: 11px system-ui, "DejaVu Sans", sans-serif; fill: var(--muted); }
svg.chart .grid { stroke: var(--rule); stroke-width: 1; }
svg.chart .weekend { fill: var(--panel); }
svg.chart .axis { stroke: var(--ink); stroke-width: 1; }
.legend { display: flex; flex-wrap: wrap; gap: 6px 18px; margin: 8px 0 0 84px;
  padding: 0; list-style: none; }
.legend li { display: flex; align-items: center; gap: 6px; }
.swatch { width: 12px; height: 12px; border-radius: 2px; display: inline-block; }
.legend .amount { color: var(--muted); font-variant-numeric: tabular-nums; }
table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: 5px 8px; border-bottom: 1px solid var(--rule); text-align: left; }
th { font-size: 12px; color: var(--muted); font-weight: 600; text-transform: uppercase;
  letter-spacing: .03em; border-bottom: 1px solid var(--ink); }
td.num, th.num { text-align: right; white-space: nowrap; }
tr.subtotal td { font-weight: 600; background: var(--panel); }
tr.total td { font-weight: 700; border-top: 2px solid var(--ink); border-bottom: none; }
.bar { background: var(--panel); border-radius: 3px; height: 10px;
  min-width: 120px; }
.bar span { display: block; height: 10px; border-radius: 3px;
  background: var(--accent); }
.empty { color: var(--muted); padding: 24px; background: var(--panel);
  border-radius: 6px; }
.estimated { color: #a15c00; }
.zero { color: #a8afbb; }
table.bill tr.subtotal td:first-child { padding-top: 9px; }
footer { margin-top: 28px; color: var(--muted); font-size: 12px;
  border-top: 1px solid var(--rule); padding-top: 10px; }
@media print { main { padding: 0; } }
"""


# Summary.


def _summary(
    rows: Sequence[SpendRow], days: list[date], money: _Money, cents: Converted
) -> str:
    total = sum(r.cost_micro_usd for r in rows)
    estimated = sum(r.estimated_cost_micro_usd for r in rows)
    requests = sum(r.requests for r in rows)
    identities = len({r.identity for r in rows if r.identity})
    share = f"{estimated * 100 / total:.1f}% of spend" if total else "none"

    def amount(printed: int, exact: int) -> str:
        shown = money.shown(printed, exact=exact)
        return f"{escape(shown)} {escape(money.currency)}"

    cards = [
        (
            "Total spend",
            amount(cents.total, total),
            f"over {len(days)} day{'s' if len(days) != 1 else ''}",
        ),
        (
            "Metered",
            amount(cents.metered, total - estimated),
            "priced from reported usage",
        ),
        ("Estimated", amount(cents.estimated, estimated), share),
        (
            "Requests",
            f"{requests:,}",
            f"{identities:,} identit{'ies' if identities != 1 else 'y'}",
        ),
    ]
    items = "\n".join(
        f'<div class="card"><div class="label">{escape(name)}</div>'
        f'<div class="value">{value}</div><div class="note">{escape(note)}</div></div>'
        for name, value, note in cards
    )
    return f'<section class="cards">\n{items}\n</section>'


# Chart.


def _chart_section(
    rows: Sequence[SpendRow],
    days: list[date],
    dimension: str,
    money: _Money,
    total_cents: int,
) -> str:
    heading = f"<h2>Daily spend by {escape(dimension)} ({escape(money.currency)})</h2>"
    if not days or not any(r.cost_micro_usd for r in rows):
        return (
            f'<section>{heading}<p class="empty">No spend in this period.</p></section>'
        )

    series, per_day = _series(rows, dimension)
    colours = _colours(series)
    svg = _svg(days, series, per_day, colours, money)
    totals = _series_totals(per_day)
    cents = _legend_cents(rows, series, dimension, money, totals, total_cents)
    legend = "\n".join(
        f'<li><span class="swatch" style="background:{colours[name]}"></span>'
        f'{escape(name)} <span class="amount">'
        f"{escape(money.shown(cents[name], exact=totals[name]))}</span></li>"
        for name in series
    )
    return (
        f"<section>{heading}<figure>{svg}"
        f'<ul class="legend">\n{legend}\n</ul></figure></section>'
    )


_BILL_DIMENSIONS = ("team", "project", "provider", "model")


def _legend_cents(
    rows: Sequence[SpendRow],
    series: list[str],
    dimension: str,
    money: _Money,
    totals: dict[str, int],
    total_cents: int,
) -> dict[str, int]:
    """Each series' printed amount: by a dimension the bill is cut by, the
    sum of its rounded bill lines (so a team reads as its bill subtotal);
    by any other, its share of the printed total."""
    if dimension not in _BILL_DIMENSIONS:
        return money.apportion(totals, total_cents)
    cents: dict[str, int] = defaultdict(int)
    for line in bill_lines(rows):
        name = label(getattr(line, dimension))
        cents[name if name in series else _OTHER] += money.line(line).total
    return cents


def _series(
    rows: Sequence[SpendRow], dimension: str
) -> tuple[list[str], dict[str, dict[str, int]]]:
    """The chart's series, largest first (``other`` last), and each day's
    micro-USD per series."""
    totals: dict[str, int] = defaultdict(int)
    for row in rows:
        totals[label(getattr(row, dimension))] += row.cost_micro_usd
    ranked = sorted((n for n in totals if totals[n] > 0), key=lambda n: (-totals[n], n))
    named = ranked if len(ranked) <= MAX_SERIES else ranked[: MAX_SERIES - 1]
    kept = set(named)

    per_day: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        name = label(getattr(row, dimension))
        per_day[row.day][name if name in kept else _OTHER] += row.cost_micro_usd
    series = named + ([_OTHER] if len(named) < len(ranked) else [])
    return series, per_day


def _series_totals(per_day: dict[str, dict[str, int]]) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for amounts in per_day.values():
        for name, amount in amounts.items():
            totals[name] += amount
    return totals


def _colours(series: list[str]) -> dict[str, str]:
    named = [s for s in series if s != _OTHER]
    colours = {name: _PALETTE[i % len(_PALETTE)] for i, name in enumerate(named)}
    colours[_OTHER] = _OTHER_COLOUR
    return colours


def _svg(
    days: list[date],
    series: list[str],
    per_day: dict[str, dict[str, int]],
    colours: dict[str, str],
    money: _Money,
) -> str:
    plot_w = _CHART_WIDTH - _MARGIN_LEFT - _MARGIN_RIGHT
    plot_h = _CHART_HEIGHT - _MARGIN_TOP - _MARGIN_BOTTOM
    peak = max(money.value(sum(per_day.get(d.isoformat(), {}).values())) for d in days)
    ticks = _ticks(peak)
    top = ticks[-1] or 1.0
    slot = plot_w / len(days)
    bar_w = max(1.0, slot * 0.72)

    def y(value: float) -> float:
        return _MARGIN_TOP + plot_h - value / top * plot_h

    parts = [
        (
            f'<svg class="chart" viewBox="0 0 {_CHART_WIDTH} {_CHART_HEIGHT}" '
            'role="img" aria-label="Daily spend by series">'
        )
    ]
    for i, day in enumerate(days):
        if day.weekday() >= 5:  # weekends shaded: the weekly rhythm shows
            parts.append(
                f'<rect class="weekend" x="{_MARGIN_LEFT + i * slot:.1f}" '
                f'y="{_MARGIN_TOP}" width="{slot:.1f}" height="{plot_h}"/>'
            )
    for tick in ticks:
        ty = y(tick)
        parts.append(
            f'<line class="grid" x1="{_MARGIN_LEFT}" '
            f'x2="{_CHART_WIDTH - _MARGIN_RIGHT}" y1="{ty:.1f}" y2="{ty:.1f}"/>'
            f'<text x="{_MARGIN_LEFT - 8}" y="{ty + 4:.1f}" text-anchor="end">'
            f"{_tick_text(tick, ticks)}</text>"
        )

    for i, day in enumerate(days):
        amounts = per_day.get(day.isoformat(), {})
        x = _MARGIN_LEFT + i * slot + (slot - bar_w) / 2
        base = 0.0
        for name in series:
            amount = amounts.get(name, 0)
            if amount <= 0:
                continue
            height = money.value(amount)
            y_top, y_bottom = y(base + height), y(base)
            base += height
            tip = f"{day.isoformat()} · {name}: {money.text(amount)} {money.currency}"
            parts.append(
                f'<rect x="{x:.1f}" y="{y_top:.1f}" width="{bar_w:.1f}" '
                f'height="{max(y_bottom - y_top, 0.5):.1f}" fill="{colours[name]}">'
                f"<title>{escape(tip)}</title></rect>"
            )

    every = max(1, math.ceil(len(days) / 16))
    for i, day in enumerate(days):
        if i % every:
            continue
        cx = _MARGIN_LEFT + i * slot + slot / 2
        parts.append(
            f'<text x="{cx:.1f}" y="{_CHART_HEIGHT - _MARGIN_BOTTOM + 18}" '
            f'text-anchor="middle">{day.strftime("%d %b")}</text>'
        )
    base_y = _MARGIN_TOP + plot_h
    parts.append(
        f'<line class="axis" x1="{_MARGIN_LEFT}" x2="{_CHART_WIDTH - _MARGIN_RIGHT}" '
        f'y1="{base_y}" y2="{base_y}"/>'
    )
    parts.append("</svg>")
    return "".join(parts)


def _ticks(peak: float) -> list[float]:
    """Round gridline values from 0 to at least ``peak``, about five."""
    if peak <= 0:
        return [0.0, 1.0]
    raw = peak / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    count = math.ceil(peak / step - 1e-9)
    return [step * i for i in range(count + 1)]


def _tick_text(value: float, ticks: list[float]) -> str:
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    decimals = 0 if step >= 1 else min(6, -math.floor(math.log10(step)) + 1)
    return f"{value:,.{decimals}f}"


# Top spenders.


def _top_spenders(rows: Sequence[SpendRow], money: _Money, total_cents: int) -> str:
    spend: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    teams: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        entry = spend[row.identity]
        entry[0] += row.cost_micro_usd
        entry[1] += row.estimated_cost_micro_usd
        entry[2] += row.requests
        teams[row.identity][row.team] += row.cost_micro_usd
    # Everyone's share of the printed total, so that the rows shown and
    # those left out add up to it.
    cents = money.apportion({i: entry[0] for i, entry in spend.items()}, total_cents)
    ranked = sorted(spend.items(), key=lambda item: (-item[1][0], item[0]))[
        :TOP_SPENDERS
    ]
    heading = "<h2>Top spenders</h2>"
    if not ranked or ranked[0][1][0] <= 0:
        return (
            f'<section>{heading}<p class="empty">No spend in this period.</p></section>'
        )

    most = ranked[0][1][0]
    body = []
    for rank, (identity, (cost, estimated, requests)) in enumerate(ranked, 1):
        team = max(teams[identity].items(), key=lambda item: item[1])[0]
        width = cost * 100 / most if most else 0
        body.append(
            f'<tr><td class="num">{rank}</td><td>{escape(identity or "(unknown)")}</td>'
            f"<td>{escape(label(team))}</td>"
            f'<td><div class="bar"><span style="width:{width:.1f}%"></span></div></td>'
            f'<td class="num">{escape(money.shown(cents[identity], exact=cost))}</td>'
            f"{_estimated_cell(estimated, money)}"
            f'<td class="num">{requests:,}</td></tr>'
        )
    head = (
        '<tr><th class="num">#</th><th>Identity</th><th>Team</th><th>Share</th>'
        f'<th class="num">Spend ({escape(money.currency)})</th>'
        '<th class="num">of which estimated</th><th class="num">Requests</th></tr>'
    )
    return f"<section>{heading}<table>{head}\n{''.join(body)}</table></section>"


# Bill.


def _bill_section(bill: Bill, money: _Money) -> str:
    heading = f"<h2>Bill for {escape(bill.month)} ({escape(money.currency)})</h2>"
    if not bill.lines:
        return (
            f'<section>{heading}<p class="empty">No spend in this month.</p></section>'
        )

    # Each team opens with its subtotal; its lines follow with the team left
    # blank and a project named only where it changes, as on a statement.
    # Lines are rounded once; subtotals and the total add up what is printed.
    body: list[str] = []
    printed: list[Converted] = []
    for subtotal in bill.by_team():
        lines = [x for x in bill.lines if x.team == subtotal.team]
        cents = [money.line(line) for line in lines]
        printed += cents
        team = label(subtotal.team)
        body.append(
            _bill_row(subtotal, converted_sum(cents), money, team, css="subtotal")
        )
        project = None
        for line, amounts in zip(lines, cents):
            shown = label(line.project) if line.project != project else ""
            project = line.project
            body.append(_bill_row(line, amounts, money, "", project=shown))
    grand = BillLine(
        "", "", "", "", bill.metered_micro_usd, bill.estimated_micro_usd, bill.requests
    )
    body.append(_bill_row(grand, converted_sum(printed), money, "Total", css="total"))

    head = (
        "<tr><th>Team</th><th>Project</th><th>Provider</th><th>Model</th>"
        '<th class="num">Metered</th><th class="num">Estimated</th>'
        '<th class="num">Total</th><th class="num">Requests</th></tr>'
    )
    return (
        f'<section>{heading}<table class="bill">{head}\n{"".join(body)}</table>'
        "</section>"
    )


def _bill_row(
    line: BillLine,
    cents: Converted,
    money: _Money,
    team: str,
    *,
    project: str = "",
    css: str = "",
) -> str:
    attribute = f' class="{css}"' if css else ""
    metered = money.shown(cents.metered, exact=line.metered_micro_usd)
    total = money.shown(cents.total, exact=line.total_micro_usd)
    return (
        f"<tr{attribute}><td>{escape(team)}</td><td>{escape(project)}</td>"
        f"<td>{escape(line.provider)}</td><td>{escape(line.model)}</td>"
        f'<td class="num">{escape(metered)}</td>'
        f"{_estimated_cell(line.estimated_micro_usd, money, cents.estimated)}"
        f'<td class="num">{escape(total)}</td>'
        f'<td class="num">{line.requests:,}</td></tr>\n'
    )


def _estimated_cell(micro_usd: int, money: _Money, cents: int | None = None) -> str:
    """Estimated amounts stand out; a zero recedes. ``cents`` is the printed
    amount when already rounded."""
    css = "estimated" if micro_usd else "zero"
    printed = money.cents(micro_usd) if cents is None else cents
    return f'<td class="num {css}">{escape(money.shown(printed, exact=micro_usd))}</td>'


def _footnote(money: _Money) -> str:
    conversion = (
        f"Amounts in {escape(money.currency)}, converted from USD at "
        f"{escape(str(money.rate))} {escape(money.currency)} per USD. "
        if money.currency != "USD"
        else "Amounts in USD. "
    )
    return (
        f"<footer>{conversion}Estimated spend was charged on an estimate because the "
        "provider reported no usage or the response was cut short; metered spend was "
        "priced from the usage the provider reported. Days are UTC days; "
        "weekends are shaded. The ledger keeps exact "
        "micro-USD; figures here are rounded to cents, each bill line once, and "
        "totals add up the rounded figures.</footer>"
    )


def _days(
    rows: Iterable[SpendRow], first: date | None, last: date | None
) -> list[date]:
    seen = [date.fromisoformat(r.day) for r in rows]
    start = first or (min(seen) if seen else None)
    end = last or (max(seen) if seen else None)
    if start is None or end is None or end < start:
        return []
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]
