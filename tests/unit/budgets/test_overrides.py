"""Budget overrides without Redis: scopes, policy budgets, applying overrides."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from extproc.budgets.admin import (
    BucketState,
    OverrideBook,
    apply_overrides,
    check_scope,
    parse_budget,
    policy_budget,
    scopes_of,
)
from extproc.budgets.scopes import Caller, buckets_for, caller_for
from extproc.budgets.store import BucketSpec
from extproc.policy import parse_policy

POLICY = parse_policy("""
timezone: Europe/Berlin
providers: {openai: {family: openai, route_prefix: /openai}}
directory:
  alice: {team: platform, project: search}
  carol: {team: research}
users:
  default:
    budget: {capacity_usd: "10", refill_usd: "10", refill_every: 1d}
    rate_limits: {requests_per_minute: 60}
  bob:
    budget: {amount_usd: "5", period: day}
teams:
  platform: {budget: {amount_usd: "3000", period: month}}
  research: {rate_limits: {requests_per_minute: 100}}
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
NOW = datetime(2027, 3, 15, 12, 0, tzinfo=UTC)
MONTHLY_50 = parse_budget({"amount_usd": "50", "period": "month"})
BUCKET_7 = parse_budget({"capacity_usd": "7", "refill_usd": "1", "refill_every": "1h"})


def _applied(caller: Caller, overrides: dict) -> list[BucketSpec]:
    policy_buckets = buckets_for(POLICY, caller, NOW)
    return apply_overrides(policy_buckets, caller, overrides, POLICY.timezone, NOW)


def _scopes(buckets: list[BucketSpec]) -> list[tuple[str, int]]:
    return [(b.scope, b.capacity) for b in buckets]


@pytest.mark.parametrize(
    "scope",
    [
        "org",
        "user:alice",
        "user:spiffe://corp/ns/app",
        "team:platform",
        "project:search",
        "tool:claude-code",
        "user:alice/tool:claude-code",
    ],
)
def test_known_scope_shapes_are_accepted(scope: str) -> None:
    assert scope == check_scope(scope)


@pytest.mark.parametrize(
    "scope",
    [
        "",
        "alice",
        "group:x",
        "user:",
        "user:alice#rpm",
        "tool:Bad Tool",
        "user:alice/tool:",
        "team:" + "x" * 257,
        "org:acme",
    ],
)
def test_other_scopes_are_refused(scope: str) -> None:
    with pytest.raises(ValueError):
        check_scope(scope)


@pytest.mark.parametrize(
    "scope, capacity_micro_usd",
    [
        ("org", 20_000_000_000),
        ("user:alice", 10_000_000),
        ("user:bob", 5_000_000),
        ("team:platform", 3_000_000_000),
        ("project:search", 500_000_000),
        ("user:alice/tool:claude-code", 300_000_000),
    ],
)
def test_policy_budget_of_each_scope_kind(scope: str, capacity_micro_usd: int) -> None:
    assert capacity_micro_usd == policy_budget(POLICY, scope).capacity_micro_usd


@pytest.mark.parametrize(
    "scope",
    ["team:research", "tool:claude-code", "team:nobody", "user:alice/tool:codex"],
)
def test_scope_without_a_policy_budget_has_none(scope: str) -> None:
    assert None is policy_budget(POLICY, scope)


def test_invalid_budget_is_a_value_error_naming_the_fault() -> None:
    with pytest.raises(ValueError, match="period"):
        parse_budget({"amount_usd": "5"})


def test_scopes_of_a_caller_are_narrowest_first() -> None:
    caller = caller_for(POLICY, "alice", "claude-code")

    assert [
        "user:alice",
        "user:alice/tool:claude-code",
        "tool:claude-code",
        "project:search",
        "team:platform",
        "org",
    ] == scopes_of(caller)


def test_no_overrides_leave_the_buckets_as_they_are() -> None:
    caller = caller_for(POLICY, "alice", None)
    buckets = buckets_for(POLICY, caller, NOW)

    assert buckets is apply_overrides(buckets, caller, {}, POLICY.timezone, NOW)


def test_override_replaces_the_policy_budget_and_keeps_rate_limits() -> None:
    applied = _applied(caller_for(POLICY, "alice", None), {"user:alice": MONTHLY_50})

    assert [("user:alice", 50_000_000), ("user:alice#rpm", 60)] == _scopes(applied)[:2]
    assert "month:2027-03-01" == applied[0].period_id


def test_override_adds_a_budget_where_the_policy_has_none_in_scope_order() -> None:
    applied = _applied(caller_for(POLICY, "carol", None), {"team:research": BUCKET_7})

    assert [
        "user:carol",
        "user:carol#rpm",
        "team:research",
        "team:research#rpm",
        "org",
    ] == [b.scope for b in applied]
    assert (7_000_000, 1_000_000, 3_600_000) == (
        applied[2].capacity,
        applied[2].refill,
        applied[2].refill_period_ms,
    )


def test_override_of_a_scope_the_caller_is_outside_of_changes_nothing() -> None:
    caller = caller_for(POLICY, "alice", None)

    applied = _applied(caller, {"team:research": MONTHLY_50, "user:bob": MONTHLY_50})

    assert buckets_for(POLICY, caller, NOW) == applied


def test_tool_overrides_apply_only_when_the_caller_uses_the_tool() -> None:
    overrides = {"tool:codex": MONTHLY_50, "user:alice/tool:codex": BUCKET_7}

    with_tool = _applied(caller_for(POLICY, "alice", "codex"), overrides)
    without = _applied(caller_for(POLICY, "alice", None), overrides)

    assert ["user:alice/tool:codex", "tool:codex"] == [
        b.scope for b in with_tool if "codex" in b.scope
    ]
    assert not [b for b in without if "codex" in b.scope]


def test_every_scope_holds_one_budget_bucket_at_most() -> None:
    caller = caller_for(POLICY, "alice", "claude-code")
    overrides = {scope: MONTHLY_50 for scope in scopes_of(caller)}

    applied = _applied(caller, overrides)

    scopes = [b.scope for b in applied]
    assert len(scopes) == len(set(scopes))
    assert all(b.capacity == 50_000_000 for b in applied if "#" not in b.scope)


def test_stored_level_of_a_refilled_bucket_regains_pro_rata_up_to_capacity() -> None:
    spec = BucketSpec("user:a", 1000, refill=100, refill_period_ms=1000)
    state = BucketState(
        level_micro_usd=200, capacity_micro_usd=1000, period="", updated_ms=10_000
    )

    assert (200, 450, 1000) == (
        state.level_at(spec, 10_000),
        state.level_at(spec, 12_500),
        state.level_at(spec, 60_000),
    )


def test_stored_level_of_a_past_calendar_period_reads_full() -> None:
    spec = BucketSpec("user:a", 1000, period_id="month:2027-04-01")
    state = BucketState(
        level_micro_usd=-50,
        capacity_micro_usd=1000,
        period="month:2027-03-01",
        updated_ms=0,
    )

    assert 1000 == state.level_at(spec, 0)


def test_stored_level_above_a_lowered_capacity_reads_as_the_capacity() -> None:
    spec = BucketSpec("user:a", 300, period_id="month:2027-03-01")
    state = BucketState(
        level_micro_usd=900,
        capacity_micro_usd=1000,
        period="month:2027-03-01",
        updated_ms=0,
    )

    assert 300 == state.level_at(spec, 0)


class FlakyRedis:
    def __init__(self, answers: list[object]) -> None:
        self.answers = answers

    async def hgetall(self, name: str) -> dict[bytes, bytes]:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


async def test_book_keeps_the_last_overrides_when_redis_does_not_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stored = {b"user:alice": MONTHLY_50.model_dump_json().encode()}
    client = FlakyRedis([stored, RedisConnectionError("refused")])
    book = OverrideBook()

    first = await book.refresh(client, "t")
    with caplog.at_level(logging.WARNING):
        second = await book.refresh(client, "t")

    assert (True, False) == (first, second)
    assert {"user:alice": MONTHLY_50} == book.current


async def test_unreadable_override_is_left_out_of_the_book() -> None:
    stored = {
        b"user:alice": b'{"amount_usd": "5"}',
        b"bad scope": b"{}",
        b"team:x": MONTHLY_50.model_dump_json().encode(),
    }
    book = OverrideBook()

    await book.refresh(FlakyRedis([stored]), "t")

    assert {"team:x": MONTHLY_50} == book.current
