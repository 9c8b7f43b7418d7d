"""``tollgate keys`` and ``tollgate budget`` against a real redis-server."""

from __future__ import annotations

import argparse
import json
import uuid
from pathlib import Path

import pytest
import redis

from extproc.admin import add_admin_commands
from extproc.budgets.admin import read_overrides
from extproc.keys import keys_hash, list_keys, looks_like_key
from extproc.local import RedisProcess

POLICY_YAML = """
tenant: {tenant}
providers: {{openai: {{family: openai, route_prefix: /openai}}}}
users:
  default: {{budget: {{capacity_usd: "10", refill_usd: "10", refill_every: 1d}}}}
"""


@pytest.fixture
def tenant(
    redis_server: RedisProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(POLICY_YAML.format(tenant=tenant))
    monkeypatch.setenv("TOLLGATE_POLICY_FILE", str(policy_file))
    monkeypatch.setenv("TOLLGATE_REDIS_URL", redis_server.url)
    return tenant


@pytest.fixture
def admin(redis_server: RedisProcess):
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


def tollgate(*argv: str) -> int:
    """Parse and run as ``tollgate`` will once the commands are registered."""
    parser = argparse.ArgumentParser(prog="tollgate")
    add_admin_commands(parser.add_subparsers(title="commands"))
    args = parser.parse_args(argv)
    return args.handler(args)


def test_keys_issue_prints_the_key_once_and_stores_its_digest(
    tenant, admin, capsys
) -> None:
    code = tollgate(
        "keys",
        "issue",
        "--user",
        "alice",
        "--tool",
        "claude-code",
        "--expires-in",
        "30d",
    )

    out, err = capsys.readouterr()
    key = out.strip()
    assert (0, True) == (code, looks_like_key(key))
    assert "only time the key is shown" in err
    [record] = list_keys(admin, tenant)
    assert ("alice", "claude-code") == (record.identity, record.tool)
    assert record.expires_ms - record.created_ms == 30 * 86_400_000
    assert key.encode() not in b"".join(admin.hvals(keys_hash(tenant)))


def test_keys_list_shows_ids_and_status_never_keys(tenant, capsys) -> None:
    tollgate("keys", "issue", "--user", "alice")
    key = capsys.readouterr().out.strip()

    tollgate("keys", "list", "--format", "json")

    [listed] = json.loads(capsys.readouterr().out)
    assert ("alice", "active") == (listed["identity"], listed["status"])
    assert key not in json.dumps(listed)


def test_keys_revoke_marks_the_key_revoked(tenant, admin, capsys) -> None:
    tollgate("keys", "issue", "--user", "alice")
    [record] = list_keys(admin, tenant)

    code = tollgate("keys", "revoke", record.key_id)

    assert 0 == code
    assert "revoked" == list_keys(admin, tenant)[0].status(0)


def test_keys_revoke_of_an_unknown_id_fails(tenant, capsys) -> None:
    assert 1 == tollgate("keys", "revoke", "0123456789ab")


def test_keys_issue_with_a_bad_lifetime_is_a_usage_error(tenant, capsys) -> None:
    code = tollgate("keys", "issue", "--user", "alice", "--expires-in", "soon")

    assert 2 == code
    assert "soon" in capsys.readouterr().err


def test_budget_set_stores_a_calendar_override(tenant, admin, capsys) -> None:
    code = tollgate(
        "budget",
        "set",
        "user:alice",
        "--amount-usd",
        "300",
        "--period",
        "month",
        "--soft-limit",
        "80",
        "--soft-limit",
        "100",
    )

    budget = read_overrides(admin, tenant)["user:alice"]
    assert 0 == code
    assert (300_000_000, "month", (80, 100)) == (
        budget.capacity_micro_usd,
        budget.period,
        budget.soft_limits_percent,
    )
    assert "300.000000 USD per month, soft limits 80%, 100%" in capsys.readouterr().out


def test_budget_set_stores_a_refilled_override(tenant, admin) -> None:
    tollgate(
        "budget",
        "set",
        "team:platform",
        "--capacity-usd",
        "50.5",
        "--refill-usd",
        "5",
        "--refill-every",
        "12h",
    )

    budget = read_overrides(admin, tenant)["team:platform"]
    assert (50_500_000, 5_000_000, 43_200_000) == (
        budget.capacity_micro_usd,
        budget.refill_micro_usd,
        budget.refill_period_ms,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ("budget", "set", "everyone", "--capacity-usd", "5"),
        ("budget", "set", "org", "--capacity-usd", "5", "--period", "month"),
        ("budget", "set", "org", "--amount-usd", "5"),
        (
            "budget",
            "set",
            "org",
            "--amount-usd",
            "5",
            "--period",
            "day",
            "--refill-usd",
            "1",
        ),
        ("budget", "set", "org", "--capacity-usd", "-5"),
        ("budget", "set", "org", "--capacity-usd", "5", "--soft-limit", "120"),
    ],
)
def test_invalid_budget_set_is_a_usage_error_and_stores_nothing(
    tenant,
    admin,
    capsys,
    argv,
) -> None:
    assert 2 == tollgate(*argv)
    assert {} == read_overrides(admin, tenant)
    assert capsys.readouterr().err.startswith("tollgate: ")


def test_budget_show_reports_the_policy_budget_when_nothing_overrides_it(
    tenant,
    capsys,
) -> None:
    tollgate("budget", "show", "user:bob", "--format", "json")

    [view] = json.loads(capsys.readouterr().out)
    assert ("policy", 10_000_000, None) == (
        view["source"],
        view["level_now_micro_usd"],
        view["bucket"],
    )


def test_budget_unset_returns_the_scope_to_the_policy(tenant, admin, capsys) -> None:
    tollgate("budget", "set", "user:bob", "--amount-usd", "1", "--period", "day")

    tollgate("budget", "unset", "user:bob")

    assert {} == read_overrides(admin, tenant)


def test_budget_list_shows_every_overridden_scope(tenant, capsys) -> None:
    tollgate("budget", "set", "org", "--amount-usd", "1000", "--period", "quarter")
    tollgate("budget", "set", "project:search", "--capacity-usd", "5")
    capsys.readouterr()

    tollgate("budget", "list")

    lines = capsys.readouterr().out.splitlines()
    assert ["scope", "org", "project:search"] == [line.split()[0] for line in lines]
