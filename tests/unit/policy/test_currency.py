"""An organisation that budgets in another currency: one rate, stated once."""

from __future__ import annotations

from decimal import Decimal

import pytest

from extproc.errors import PolicyError
from extproc.money import format_money
from extproc.policy import parse_policy
from extproc.policy.model import Currency
from extproc.spend import SpendRow, render

EUR_POLICY = """
currency: {code: EUR, per_usd: "0.92"}
providers: {openai: {family: openai, route_prefix: /openai}}
users:
  default: {budget: {capacity: "92", refill: "9.2", refill_every: 1d}}
  bob: {budget: {amount: "46", period: month}}
  carol: {budget: {capacity_usd: "5"}}
teams:
  platform: {budget: {amount: "920", period: month}}
tools:
  limits:
    claude-code: {per_user: {budget: {amount: "9.2", period: day}}}
"""


def test_budgets_written_in_the_currency_are_held_in_usd() -> None:
    policy = parse_policy(EUR_POLICY)

    assert 100_000_000 == policy.users["default"].budget.capacity_micro_usd
    assert 10_000_000 == policy.users["default"].budget.refill_micro_usd
    assert 50_000_000 == policy.users["bob"].budget.capacity_micro_usd
    assert 1_000_000_000 == policy.teams["platform"].budget.capacity_micro_usd
    assert (
        10_000_000
        == policy.tools.limits["claude-code"].per_user.budget.capacity_micro_usd
    )


def test_usd_amounts_stay_usd_whatever_the_currency() -> None:
    assert (
        5_000_000 == parse_policy(EUR_POLICY).users["carol"].budget.capacity_micro_usd
    )


def test_both_spellings_of_one_amount_are_refused() -> None:
    text = EUR_POLICY.replace('capacity: "92"', 'capacity: "92", capacity_usd: "1"')

    with pytest.raises(PolicyError, match="not both"):
        parse_policy(text)


def test_usd_with_a_rate_other_than_one_is_refused() -> None:
    with pytest.raises(PolicyError, match="per_usd"):
        parse_policy(EUR_POLICY.replace("code: EUR", "code: USD"))


def test_money_is_shown_in_the_currency() -> None:
    assert "0.920000 EUR" == format_money(1_000_000, "EUR", Decimal("0.92"))
    assert "1.234567 USD" == format_money(1_234_567)


def test_spend_table_speaks_the_currency() -> None:
    rows = [
        SpendRow(
            "2026-12-01",
            "alice",
            "",
            "",
            "",
            "openai",
            "gpt-4o",
            requests=1,
            cost_micro_usd=2_000_000,
        )
    ]

    table = render(rows, "table", Currency(code="EUR", per_usd=Decimal("0.92")))

    assert "cost_eur" in table and "1.840000" in table
    assert table.endswith("total 1.840000 EUR over 1 rows")
