"""The spend page is one self-contained file: no network, no script; a chart
of daily spend by any dimension, the top spenders and the bill."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal

import pytest

from extproc.reports.bill import build_bill
from extproc.reports.html import MAX_SERIES, render_html
from extproc.spend import SpendRow


def _row(
    day: str,
    identity: str,
    team: str,
    cost: int,
    *,
    estimated: int = 0,
    provider: str = "openai",
    model: str = "gpt-4o",
) -> SpendRow:
    return SpendRow(
        day=day,
        identity=identity,
        team=team,
        project="p",
        tool="sdk",
        provider=provider,
        model=model,
        requests=2,
        cost_micro_usd=cost,
        estimated_cost_micro_usd=estimated,
    )


ROWS = [
    _row("2026-11-01", "alice", "platform", 12_500_000, estimated=500_000),
    _row(
        "2026-11-01",
        "bob",
        "search",
        3_000_000,
        provider="anthropic",
        model="claude-sonnet-4",
    ),
    _row("2026-11-03", "alice", "platform", 4_000_000),
    _row("2026-11-03", "svc", "", 1_000_000),
]


def _rects(page: str) -> list[str]:
    """The bar segments (weekend shading aside)."""
    return re.findall(r"<rect x[^>]*>", page)


def test_page_loads_nothing_from_anywhere() -> None:
    page = render_html(ROWS, bill=build_bill(ROWS, "2026-11"))

    assert [] == re.findall(
        r"https?://|//[a-z0-9.-]+\.[a-z]{2,}|\bsrc=|\bhref=|url\(|@import",
        page,
        flags=re.IGNORECASE,
    )


def test_page_has_no_script() -> None:
    assert "<script" not in render_html(ROWS).lower()


def test_page_is_one_complete_html_document_with_inline_svg() -> None:
    page = render_html(ROWS)

    assert (True, True, 1, 1) == (
        page.startswith("<!DOCTYPE html>"),
        page.rstrip().endswith("</html>"),
        page.count("<svg"),
        page.count("<style>"),
    )


def test_chart_stacks_one_bar_segment_per_day_and_series() -> None:
    page = render_html(ROWS, dimension="team")

    # 01 Nov: platform and search; 03 Nov: platform and (none); 02 Nov empty.
    assert 4 == len(_rects(page))


def test_chart_covers_days_without_spend_when_asked() -> None:
    page = render_html(ROWS, first=date(2026, 10, 30), last=date(2026, 11, 4))

    assert ("2026-10-30 to 2026-11-04", True) == (
        re.search(r'class="period">([^<]*)<', page).group(1),
        "30 Oct" in page,
    )


def test_chart_tooltips_name_day_series_and_amount() -> None:
    page = render_html(ROWS, dimension="team")

    assert "<title>2026-11-01 · platform: 12.50 USD</title>" in page


def test_chart_can_be_stacked_by_provider() -> None:
    page = render_html(ROWS, dimension="provider")

    assert (
        "2026-11-01 · anthropic: 3.00 USD" in page,
        "Daily spend by provider" in page,
    ) == (True, True)


def test_series_beyond_the_limit_are_stacked_as_other() -> None:
    rows = [
        _row("2026-11-01", f"user{i}", f"team{i:02d}", 1_000_000 * (i + 1))
        for i in range(MAX_SERIES + 3)
    ]

    page = render_html(rows, dimension="team")

    legend = re.findall(r'<span class="swatch"[^>]*></span>([^<]+) <span', page)
    assert (MAX_SERIES, "other") == (len(legend), legend[-1])


def test_unknown_dimension_is_refused() -> None:
    with pytest.raises(ValueError, match="dimension"):
        render_html(ROWS, dimension="colour")


def test_summary_shows_total_metered_and_estimated() -> None:
    page = render_html(ROWS)

    assert ("20.50 USD", "20.00 USD", "0.50 USD") == tuple(
        re.findall(r'<div class="value">([^<]+)</div>', page)[:3]
    )


def test_top_spenders_are_ranked_by_spend() -> None:
    page = render_html(ROWS)

    table = page.split("Top spenders", 1)[1].split("</table>", 1)[0]
    assert ["alice", "bob", "svc"] == re.findall(
        r'<tr><td class="num">\d+</td><td>([^<]+)</td>', table
    )


def test_bill_table_shows_team_subtotals_and_the_total() -> None:
    page = render_html(ROWS, bill=build_bill(ROWS, "2026-11"))

    bill = page.split("Bill for 2026-11", 1)[1]
    assert ("platform", "(none)", "Total", "20.50") == (
        re.findall(r'<tr class="subtotal"><td>([^<]+)</td>', bill)[0],
        re.findall(r'<tr class="subtotal"><td>([^<]+)</td>', bill)[-1],
        re.search(r'<tr class="total"><td>([^<]+)</td>', bill).group(1),
        re.findall(
            r'<tr class="total">(?:<td[^>]*>[^<]*</td>){6}<td class="num">([^<]+)<',
            bill,
        )[0],
    )


def test_page_without_bill_has_no_bill_table() -> None:
    assert "Bill for" not in render_html(ROWS)


def test_amounts_are_converted_into_the_organisations_currency() -> None:
    page = render_html(ROWS, currency="eur", rate=Decimal("0.5"))

    assert ("10.25 EUR", True) == (
        re.findall(r'<div class="value">([^<]+)</div>', page)[0],
        "converted from USD at 0.5 EUR per USD" in page,
    )


def test_tiny_amounts_do_not_print_as_zero() -> None:
    page = render_html([_row("2026-11-01", "alice", "platform", 4)])

    assert "&lt; 0.01 USD" in page


def test_names_from_clients_are_escaped() -> None:
    hostile = '<img src=x onerror="alert(1)">'

    page = render_html(
        [_row("2026-11-01", hostile, hostile, 1_000_000)], dimension="team"
    )

    assert (hostile in page, "&lt;img src=x" in page) == (False, True)


def test_no_spend_says_so_instead_of_drawing() -> None:
    page = render_html([], first=date(2026, 11, 1), last=date(2026, 11, 30))

    assert ("No spend in this period." in page, "<rect" in page) == (True, False)


def test_weekends_are_shaded_behind_the_bars() -> None:
    page = render_html(ROWS, dimension="team")

    # 01 Nov 2026 is a Sunday; 02 and 03 Nov are weekdays.
    assert 1 == len(re.findall(r'<rect class="weekend"', page))


def _cells(row: str) -> list[str]:
    return re.findall(r"<td[^>]*>([^<]*)</td>", row)


HALF_CENT_ROWS = [  # every line's amounts end in half a cent
    _row("2026-11-02", "alice", "platform", 2_010_000, estimated=1_005_000),
    _row("2026-11-02", "bob", "platform", 1_005_000, model="gpt-4o-mini"),
]


def test_bill_total_row_is_the_sum_of_the_printed_lines() -> None:
    page = render_html(HALF_CENT_ROWS, bill=build_bill(HALF_CENT_ROWS, "2026-11"))

    bill = page.split("Bill for 2026-11", 1)[1]
    lines = re.findall(r"<tr>(<td></td>.*?)</tr>", bill)
    total = re.search(r'<tr class="total">(.*?)</tr>', bill).group(1)
    printed = [sum(Decimal(_cells(x)[i]) for x in lines) for i in (4, 5, 6)]
    assert printed == [Decimal(v) for v in _cells(total)[4:7]]


def test_summary_total_is_the_printed_metered_plus_estimated() -> None:
    page = render_html(HALF_CENT_ROWS)

    total, metered, estimated = (
        Decimal(v.split()[0])
        for v in re.findall(r'<div class="value">([^<]+)</div>', page)[:3]
    )
    assert metered + estimated == total


THIRD_CENT_ROWS = [  # three spenders, each a third of a cent past a cent
    _row("2026-11-02", name, "platform", 13_333) for name in ("alice", "bob", "carol")
]


def _printed_total(page: str) -> Decimal:
    return Decimal(re.search(r'<div class="value">([^<]+)</div>', page)[1].split()[0])


def test_top_spenders_add_up_to_the_printed_total() -> None:
    page = render_html(THIRD_CENT_ROWS)

    spenders = page.split("Top spenders", 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr><td class=\"num\">\d+</td>(.*?)</tr>", spenders)
    spend = [Decimal(_cells(r)[2]) for r in rows]
    assert _printed_total(page) == sum(spend)


def test_legend_by_identity_adds_up_to_the_printed_total() -> None:
    page = render_html(THIRD_CENT_ROWS, dimension="identity")

    legend = re.findall(r'<span class="amount">([^<]+)</span>', page)
    assert _printed_total(page) == sum(Decimal(v) for v in legend)


def test_legend_by_team_reads_as_the_bill_subtotals() -> None:
    bill = build_bill(HALF_CENT_ROWS, "2026-11")
    page = render_html(HALF_CENT_ROWS, bill=bill)

    [legend] = re.findall(r'<span class="amount">([^<]+)</span>', page)
    subtotal = re.search(r'<tr class="subtotal">(.*?)</tr>', page).group(1)
    assert _cells(subtotal)[6] == legend
