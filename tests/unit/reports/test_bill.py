"""The month's bill: exact totals from integer micro-USD, metered and
estimated apart, as CSV for finance."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest

from extproc.reports.bill import Bill, bill_csv, build_bill, convert
from extproc.spend import SpendRow


def _row(
    day: str,
    identity: str,
    team: str,
    project: str,
    provider: str,
    model: str,
    cost: int,
    estimated: int = 0,
    requests: int = 1,
) -> SpendRow:
    return SpendRow(
        day=day,
        identity=identity,
        team=team,
        project=project,
        tool="sdk",
        provider=provider,
        model=model,
        requests=requests,
        cost_micro_usd=cost,
        estimated_cost_micro_usd=estimated,
    )


ROWS = [
    _row(
        "2026-11-01",
        "alice",
        "platform",
        "gateway",
        "openai",
        "gpt-4o",
        1_000_001,
        1,
        3,
    ),
    _row(
        "2026-11-02", "bob", "platform", "gateway", "openai", "gpt-4o", 2_000_002, 0, 4
    ),
    _row(
        "2026-11-02",
        "alice",
        "platform",
        "gateway",
        "anthropic",
        "claude-sonnet-4",
        333_333,
    ),
    _row(
        "2026-11-30", "carol", "search", "ranking", "gemini", "gemini-2.5-pro", 7, 7, 2
    ),
    _row("2026-11-15", "svc", "", "", "openai", "gpt-4o-mini", 10, 0, 5),
    _row("2026-10-31", "alice", "platform", "gateway", "openai", "gpt-4o", 99_000_000),
    _row("2026-12-01", "alice", "platform", "gateway", "openai", "gpt-4o", 99_000_000),
]


def _csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_bill_keeps_only_the_months_days() -> None:
    bill = build_bill(ROWS, "2026-11")

    assert 3_333_353 == bill.total_micro_usd


def test_bill_sums_identities_into_team_project_provider_model_lines() -> None:
    bill = build_bill(ROWS, "2026-11")

    gpt4o = [line for line in bill.lines if line.model == "gpt-4o"]
    assert [("platform", "gateway", 3_000_002, 1, 7)] == [
        (x.team, x.project, x.metered_micro_usd, x.estimated_micro_usd, x.requests)
        for x in gpt4o
    ]


def test_bill_separates_metered_from_estimated_exactly() -> None:
    bill = build_bill(ROWS, "2026-11")

    assert (3_333_345, 8, 3_333_353) == (
        bill.metered_micro_usd,
        bill.estimated_micro_usd,
        bill.total_micro_usd,
    )


def test_bill_lines_are_sorted_with_unattributed_last() -> None:
    bill = build_bill(ROWS, "2026-11")

    assert [
        ("platform", "anthropic"),
        ("platform", "openai"),
        ("search", "gemini"),
        ("", "openai"),
    ] == [(x.team, x.provider) for x in bill.lines]


def test_team_subtotals_add_up_to_the_total() -> None:
    bill = build_bill(ROWS, "2026-11")

    subtotals = bill.by_team()
    assert (["platform", "search", ""], bill.total_micro_usd) == (
        [s.team for s in subtotals],
        sum(s.total_micro_usd for s in subtotals),
    )


def test_malformed_month_is_refused() -> None:
    with pytest.raises(ValueError, match="YYYY-MM"):
        build_bill(ROWS, "2026-13")


def test_empty_month_gives_an_empty_bill() -> None:
    assert Bill("2025-01", ()) == build_bill(ROWS, "2025-01")


def test_csv_has_the_finance_columns() -> None:
    header = bill_csv(build_bill(ROWS, "2026-11")).splitlines()[0]

    assert (
        "team,project,provider,model,metered_usd,estimated_usd,total_usd,requests"
        == header
    )


def test_csv_amounts_are_exact_decimal_usd() -> None:
    rows = _csv_rows(bill_csv(build_bill(ROWS, "2026-11")))

    gpt4o = next(r for r in rows if r["model"] == "gpt-4o")
    assert ("3.000002", "0.000001", "3.000003", "7") == (
        gpt4o["metered_usd"],
        gpt4o["estimated_usd"],
        gpt4o["total_usd"],
        gpt4o["requests"],
    )


def test_csv_ends_with_exact_totals() -> None:
    rows = _csv_rows(bill_csv(build_bill(ROWS, "2026-11")))

    assert {
        "team": "(total)",
        "project": "",
        "provider": "",
        "model": "",
        "metered_usd": "3.333345",
        "estimated_usd": "0.000008",
        "total_usd": "3.333353",
        "requests": "15",
    } == rows[-1]


def test_csv_total_equals_the_sum_of_its_lines() -> None:
    rows = _csv_rows(bill_csv(build_bill(ROWS, "2026-11")))

    lines_sum = sum(Decimal(r["total_usd"]) for r in rows[:-1])
    assert Decimal(rows[-1]["total_usd"]) == lines_sum


def test_csv_shows_missing_team_and_project_as_none() -> None:
    rows = _csv_rows(bill_csv(build_bill(ROWS, "2026-11")))

    unattributed = next(r for r in rows if r["model"] == "gpt-4o-mini")
    assert ("(none)", "(none)") == (unattributed["team"], unattributed["project"])


def test_csv_in_another_currency_adds_converted_columns() -> None:
    text = bill_csv(build_bill(ROWS, "2026-11"), currency="EUR", rate=Decimal("0.9"))

    total = _csv_rows(text)[-1]
    assert ("3.333353", "3.000018") == (total["total_usd"], total["total_eur"])


def test_conversion_rounds_once_to_the_micro_unit() -> None:
    assert Decimal("0.000002") == convert(3, Decimal("0.5"))


def test_a_model_name_that_is_a_formula_is_written_as_text() -> None:
    rows = [_row("2026-11-02", "x", "t", "", "openai", '=1+2,"@SUM(1)"', 5)]

    lines = list(csv.reader(io.StringIO(bill_csv(build_bill(rows, "2026-11")))))

    assert '\'=1+2,"@SUM(1)"' == lines[1][3]


HALF = Decimal("0.5")  # EUR per USD: each micro-USD is half a micro-euro
HALF_MICRO_ROWS = [
    _row("2026-11-03", "a", "platform", "", "openai", "gpt-4o", 2, 1),
    _row("2026-11-03", "b", "search", "", "openai", "gpt-4o", 2, 1),
    _row("2026-11-03", "c", "support", "", "openai", "gpt-4o", 2, 1),
]


def test_csv_converted_total_row_is_the_sum_of_the_converted_lines() -> None:
    text = bill_csv(build_bill(HALF_MICRO_ROWS, "2026-11"), currency="EUR", rate=HALF)

    rows = _csv_rows(text)
    columns = ("metered_eur", "estimated_eur", "total_eur")
    lines_sum = [sum(Decimal(r[c]) for r in rows[:-1]) for c in columns]
    assert lines_sum == [Decimal(rows[-1][c]) for c in columns]


def test_csv_converted_line_total_is_its_metered_plus_estimated() -> None:
    text = bill_csv(build_bill(HALF_MICRO_ROWS, "2026-11"), currency="EUR", rate=HALF)

    line = _csv_rows(text)[0]
    parts = Decimal(line["metered_eur"]) + Decimal(line["estimated_eur"])
    assert parts == Decimal(line["total_eur"])
