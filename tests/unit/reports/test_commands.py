"""The report commands read booked spend from Redis and write the bill or
the page; bad arguments and an unreachable Redis end in an exit code."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from extproc.budgets.store import Attribution, Keys
from extproc.reports.commands import bill_command, html_command

DEMO_POLICY = (
    Path(__file__).resolve().parents[3] / "extproc" / "local" / "demo_policy.yaml"
)


@pytest.fixture
def spend_redis(redis_server, monkeypatch: pytest.MonkeyPatch) -> redis.Redis:
    """The shared redis-server, emptied, as the commands' store."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    monkeypatch.setenv("TOLLGATE_REDIS_URL", redis_server.url)
    monkeypatch.setenv("TOLLGATE_POLICY_FILE", str(DEMO_POLICY))
    yield client
    client.flushdb()
    client.close()


def _book(
    client: redis.Redis, day: str, team: str, cost: int, estimated: int = 0
) -> None:
    field = Attribution(
        identity="alice",
        provider="openai",
        model="gpt-4o",
        team=team,
        project="gateway",
        tool="sdk",
    ).spend_prefix()
    key = Keys("default").spend(day)
    client.hincrby(key, field + "cost_micro_usd", cost)
    client.hincrby(key, field + "requests", 1)
    if estimated:
        client.hincrby(key, field + "estimated_cost_micro_usd", estimated)


def test_bill_command_writes_the_months_csv(spend_redis, tmp_path) -> None:
    _book(spend_redis, "2026-11-03", "platform", 1_250_000, estimated=250_000)
    _book(spend_redis, "2026-11-30", "platform", 750_001)
    _book(spend_redis, "2026-12-01", "platform", 9_000_000)
    output = tmp_path / "bill.csv"

    code = bill_command(
        argparse.Namespace(month="2026-11", format="csv", output=str(output))
    )

    assert (
        0,
        [
            "team,project,provider,model,metered_usd,estimated_usd,total_usd,requests",
            "platform,gateway,openai,gpt-4o,1.750001,0.250000,2.000001,2",
            "(total),,,,1.750001,0.250000,2.000001,2",
        ],
    ) == (code, output.read_text().splitlines())


def test_bill_command_writes_html_with_the_bill(spend_redis, tmp_path) -> None:
    _book(spend_redis, "2026-11-03", "platform", 1_000_000)
    output = tmp_path / "bill.html"

    code = bill_command(
        argparse.Namespace(month="2026-11", format="html", output=str(output))
    )

    assert (0, True) == (code, "Bill for 2026-11" in output.read_text())


def test_bill_command_refuses_a_malformed_month(capsys) -> None:
    code = bill_command(argparse.Namespace(month="11/2026", format="csv", output=None))

    assert (2, True) == (code, "YYYY-MM" in capsys.readouterr().err)


def test_html_command_writes_the_page_of_the_last_days(spend_redis, tmp_path) -> None:
    today = datetime.now(UTC).date().isoformat()
    _book(spend_redis, today, "search", 3_000_000)
    output = tmp_path / "spend.html"

    code = html_command(argparse.Namespace(html=str(output), dimension="team", days=7))

    assert (0, True) == (code, f"{today} · search: 3.00 USD" in output.read_text())


def test_html_command_refuses_an_unknown_dimension(capsys) -> None:
    code = html_command(argparse.Namespace(html="/dev/null", dimension="mood", days=7))

    assert 2 == code


def test_unreachable_redis_ends_with_exit_code_one(
    monkeypatch, tmp_path, capsys
) -> None:
    monkeypatch.setenv("TOLLGATE_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("TOLLGATE_POLICY_FILE", str(DEMO_POLICY))

    code = bill_command(argparse.Namespace(month="2026-11", format="csv", output=None))

    assert (1, True) == (code, "cannot read spend" in capsys.readouterr().err)


def test_unreachable_redis_is_named_without_its_password(
    monkeypatch, capsys
) -> None:
    monkeypatch.setenv("TOLLGATE_REDIS_URL", "redis://app:hunter%2F2@127.0.0.1:1/0")
    monkeypatch.setenv("TOLLGATE_POLICY_FILE", str(DEMO_POLICY))

    bill_command(argparse.Namespace(month="2026-11", format="csv", output=None))

    err = capsys.readouterr().err
    assert ("hunter" in err, "redis://app:***@127.0.0.1:1/0" in err) == (False, True)
