"""Spend summed over the dimensions a reader chooses."""

from __future__ import annotations

import csv
import io
import json

import pytest

from extproc.admin.spend_views import group_spend, parse_by, render_groups
from extproc.spend import SpendRow

ROWS = [
    SpendRow(
        "2027-03-01",
        "alice",
        "platform",
        "search",
        "claude-code",
        "anthropic",
        "claude-sonnet-4",
        requests=2,
        input_tokens=100,
        output_tokens=10,
        cost_micro_usd=1_500_000,
    ),
    SpendRow(
        "2027-03-01",
        "bob",
        "platform",
        "",
        "codex",
        "openai",
        "gpt-4o",
        requests=1,
        input_tokens=50,
        output_tokens=5,
        cost_micro_usd=250_000,
        estimated_cost_micro_usd=250_000,
    ),
    SpendRow(
        "2027-03-02",
        "alice",
        "platform",
        "search",
        "claude-code",
        "openai",
        "gpt-4o",
        requests=3,
        input_tokens=30,
        output_tokens=3,
        cost_micro_usd=100_000,
    ),
    SpendRow(
        "2027-03-02",
        "carol",
        "",
        "",
        "",
        "anthropic",
        "claude-sonnet-4",
        requests=1,
        input_tokens=1,
        output_tokens=1,
        cost_micro_usd=7,
    ),
]


def test_rows_are_summed_per_combination_of_the_chosen_dimensions() -> None:
    groups = group_spend(ROWS, ["team", "provider"])

    assert [
        ("", "anthropic", 1, 7),
        ("platform", "anthropic", 2, 1_500_000),
        ("platform", "openai", 4, 350_000),
    ] == [
        (g["team"], g["provider"], g["requests"], g["cost_micro_usd"]) for g in groups
    ]


def test_a_group_carries_only_its_dimensions_and_every_metric() -> None:
    group = group_spend(ROWS, ["day"])[0]

    assert {
        "day": "2027-03-01",
        "requests": 3,
        "input_tokens": 150,
        "output_tokens": 15,
        "cost_micro_usd": 1_750_000,
        "estimated_cost_micro_usd": 250_000,
    } == group


def test_no_dimension_sums_everything_into_one_group() -> None:
    assert [1_850_007] == [g["cost_micro_usd"] for g in group_spend(ROWS, [])]


def test_no_rows_make_no_groups() -> None:
    assert [] == group_spend([], ["identity"])


def test_the_order_of_by_is_the_order_of_grouping() -> None:
    groups = group_spend(ROWS, ["provider", "identity"])

    assert [
        ("anthropic", "alice"),
        ("anthropic", "carol"),
        ("openai", "alice"),
        ("openai", "bob"),
    ] == [(g["provider"], g["identity"]) for g in groups]


@pytest.mark.parametrize("text", ["team,colour", "team,team", "cost_micro_usd"])
def test_unknown_or_repeated_dimension_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_by(text)


def test_by_text_is_split_on_commas() -> None:
    assert ["team", "provider"] == parse_by(" team, provider ,")


def test_csv_has_the_dimensions_then_the_metrics() -> None:
    text = render_groups(group_spend(ROWS, ["tool"]), ["tool"], "csv")

    rows = list(csv.DictReader(io.StringIO(text)))
    assert [
        "tool",
        "requests",
        "input_tokens",
        "output_tokens",
        "cost_micro_usd",
        "estimated_cost_micro_usd",
    ] == list(rows[0])
    assert ["", "claude-code", "codex"] == [r["tool"] for r in rows]


def test_json_is_the_groups_themselves() -> None:
    groups = group_spend(ROWS, ["model"])

    assert groups == json.loads(render_groups(groups, ["model"], "json"))


def test_table_shows_usd_and_the_total() -> None:
    text = render_groups(group_spend(ROWS, ["team"]), ["team"], "table")

    assert "-" == text.splitlines()[1].split()[0]
    assert text.endswith("total 1.850007 USD over 2 groups")
