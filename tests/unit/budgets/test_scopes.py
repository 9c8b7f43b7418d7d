"""Which buckets apply to a caller: user, tool, project, team, organisation."""

from __future__ import annotations

from datetime import UTC, datetime

from extproc.budgets.scopes import Caller, buckets_for, caller_for
from extproc.policy import parse_policy

POLICY = parse_policy("""
timezone: Europe/Berlin
providers: {openai: {family: openai, route_prefix: /openai}}
directory:
  alice: {team: platform, project: search}
users:
  default:
    budget: {capacity_usd: "10", refill_usd: "10", refill_every: 1d}
    rate_limits: {requests_per_minute: 60, tokens_per_minute: 1000}
  bob:
    budget: {amount_usd: "5", period: day}
teams:
  platform: {budget: {amount_usd: "3000", period: month, soft_limits_percent: [100, 80]}}
projects:
  search: {budget: {amount_usd: "500", period: month}}
organisation:
  budget: {amount_usd: "20000", period: month}
tools:
  limits:
    claude-code:
      per_user: {budget: {amount_usd: "300", period: month}}
      overall: {rate_limits: {requests_per_minute: 1000}}
""")
NOW = datetime(2027, 3, 31, 22, 30, tzinfo=UTC)


def test_member_gets_user_tool_project_team_and_org_buckets_narrowest_first() -> None:
    caller = caller_for(POLICY, "alice", "claude-code")

    scopes = [b.scope for b in buckets_for(POLICY, caller, NOW)]

    assert [
        "user:alice",
        "user:alice#rpm",
        "user:alice#tpm",
        "user:alice/tool:claude-code",
        "tool:claude-code#rpm",
        "project:search",
        "team:platform",
        "org",
    ] == scopes


def test_unknown_identity_gets_the_default_user_limits_and_the_org() -> None:
    scopes = [b.scope for b in buckets_for(POLICY, Caller("zed"), NOW)]

    assert ["user:zed", "user:zed#rpm", "user:zed#tpm", "org"] == scopes


def test_named_user_replaces_the_default() -> None:
    buckets = buckets_for(POLICY, Caller("bob"), NOW)

    assert [("user:bob", 5_000_000, "day:2027-04-01")] == [
        (b.scope, b.capacity, b.period_id)
        for b in buckets
        if b.scope.startswith("user")
    ]


def test_calendar_budget_uses_the_policy_time_zone() -> None:
    org = buckets_for(POLICY, Caller("zed"), NOW)[-1]

    assert "month:2027-04-01" == org.period_id


def test_rate_limits_refill_per_minute_in_their_own_unit() -> None:
    rpm = buckets_for(POLICY, Caller("zed"), NOW)[1]

    assert (60, 60, 60_000, "requests") == (
        rpm.capacity,
        rpm.refill,
        rpm.refill_period_ms,
        rpm.unit,
    )


def test_soft_limits_are_sorted() -> None:
    team = [
        b
        for b in buckets_for(POLICY, caller_for(POLICY, "alice", None), NOW)
        if b.scope == "team:platform"
    ][0]

    assert (80, 100) == team.soft_limits
