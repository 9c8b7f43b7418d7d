"""Budget overrides and inspection against a real redis-server and Redis
Cluster: every test that takes ``admin`` runs on both."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from extproc.budgets.admin import (
    apply_overrides,
    budget_view,
    list_budget_views,
    load_overrides,
    overrides_hash,
    parse_budget,
    read_overrides,
    remove_override,
    set_override,
)
from extproc.budgets.scopes import buckets_for, caller_for
from extproc.budgets.store import Attribution, BudgetStore, Settlement
from extproc.policy import parse_policy

NOW = datetime(2027, 3, 15, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
POLICY_YAML = """
tenant: {tenant}
providers: {{openai: {{family: openai, route_prefix: /openai}}}}
directory: {{alice: {{team: platform}}}}
users:
  default: {{budget: {{amount_usd: "300", period: month}},
             rate_limits: {{requests_per_minute: 60}}}}
teams:
  platform: {{budget: {{capacity_usd: "1000", refill_usd: "100", refill_every: 1d}}}}
"""
MONTHLY_500 = parse_budget({"amount_usd": "500", "period": "month"})
MONTHLY_100 = parse_budget({"amount_usd": "100", "period": "month"})
DAILY_20 = parse_budget({"amount_usd": "20", "period": "day"})
REFILLED_40 = parse_budget(
    {"capacity_usd": "40", "refill_usd": "1", "refill_every": "1d"}
)


@pytest.fixture
def policy():
    return parse_policy(POLICY_YAML.format(tenant=f"t-{uuid.uuid4().hex[:8]}"))


@pytest.fixture(params=["server", "cluster"])
def backend(request: pytest.FixtureRequest) -> tuple[str, str]:
    fixture = "redis_cluster" if request.param == "cluster" else "redis_server"
    return request.param, request.getfixturevalue(fixture).url


@pytest.fixture
def admin(backend) -> Iterator[redis.Redis]:
    kind, url = backend
    connect = redis.RedisCluster.from_url if kind == "cluster" else redis.Redis.from_url
    client = connect(url)
    yield client
    client.close()


@pytest.fixture
async def store(backend, policy) -> AsyncIterator[BudgetStore]:
    kind, url = backend
    if kind == "cluster":
        client = AsyncRedisCluster.from_url(url)
        await client.initialize()
    else:
        client = aioredis.from_url(url)
    yield BudgetStore(client, policy.tenant, lease_ms=60_000)
    await client.aclose()


async def _spend(store: BudgetStore, policy, identity: str, cost: int) -> None:
    """Reserve and settle one call of ``cost`` as the gateway would."""
    caller = caller_for(policy, identity, None)
    buckets = buckets_for(policy, caller, NOW)
    rid = uuid.uuid4().hex
    await store.reserve(
        rid,
        buckets,
        estimate_micro_usd=cost,
        estimate_tokens=0,
        record={},
        now_ms=NOW_MS,
    )
    await store.settle(
        Settlement(rid, cost, 1, 1, False, "metered", {}),
        buckets,
        Attribution(identity, "openai", "gpt-4o"),
        now=NOW,
    )


def test_override_is_stored_as_the_policy_budget_model(admin, policy) -> None:
    set_override(admin, policy.tenant, "user:alice", MONTHLY_500, now=NOW)

    assert {"user:alice": MONTHLY_500} == read_overrides(admin, policy.tenant)
    assert MONTHLY_500 == type(MONTHLY_500).model_validate_json(
        admin.hget(overrides_hash(policy.tenant), "user:alice")
    )


async def test_server_loads_the_overrides_with_its_async_client(
    admin, store, policy
) -> None:
    set_override(admin, policy.tenant, "team:platform", DAILY_20, now=NOW)

    loaded = await load_overrides(store._redis, policy.tenant)

    assert {"team:platform": DAILY_20} == loaded


def test_invalid_scope_stores_nothing(admin, policy) -> None:
    with pytest.raises(ValueError):
        set_override(admin, policy.tenant, "user:alice#rpm", MONTHLY_500, now=NOW)

    assert {} == read_overrides(admin, policy.tenant)


def test_scope_without_bucket_shows_the_policy_budget_full(admin, policy) -> None:
    view = budget_view(admin, policy.tenant, "user:alice", policy, NOW)

    assert ("policy", None, 300_000_000) == (
        view.source,
        view.bucket,
        view.level_now_micro_usd,
    )


async def test_show_reads_the_live_bucket(admin, store, policy) -> None:
    await _spend(store, policy, "alice", 40_000_000)

    view = budget_view(admin, policy.tenant, "user:alice", policy, NOW)

    assert (260_000_000, 300_000_000, "month:2027-03-01") == (
        view.bucket.level_micro_usd,
        view.bucket.capacity_micro_usd,
        view.bucket.period,
    )
    assert 260_000_000 == view.level_now_micro_usd


async def test_show_adds_the_refill_since_the_last_call(admin, store, policy) -> None:
    await _spend(store, policy, "alice", 40_000_000)
    six_hours_later = datetime(2027, 3, 15, 18, 0, tzinfo=UTC)

    view = budget_view(admin, policy.tenant, "team:platform", policy, six_hours_later)

    assert (960_000_000, 985_000_000) == (
        view.bucket.level_micro_usd,
        view.level_now_micro_usd,
    )


async def test_raising_a_budget_mid_period_adds_the_difference(
    admin, store, policy
) -> None:
    await _spend(store, policy, "alice", 250_000_000)

    shift = set_override(admin, policy.tenant, "user:alice", MONTHLY_500, now=NOW)

    view = budget_view(admin, policy.tenant, "user:alice", policy, NOW)
    assert (200_000_000, 250_000_000) == (shift, view.level_now_micro_usd)
    assert ("override", MONTHLY_500) == (view.source, view.effective)


async def test_lowering_a_budget_keeps_what_was_spent_spent(
    admin, store, policy
) -> None:
    await _spend(store, policy, "alice", 50_000_000)

    set_override(admin, policy.tenant, "user:alice", MONTHLY_100, now=NOW)

    assert (
        50_000_000
        == budget_view(
            admin, policy.tenant, "user:alice", policy, NOW
        ).level_now_micro_usd
    )


async def test_next_reservation_with_the_override_applied_sees_the_rebased_level(
    admin,
    store,
    policy,
) -> None:
    await _spend(store, policy, "alice", 250_000_000)
    set_override(admin, policy.tenant, "user:alice", MONTHLY_500, now=NOW)
    caller = caller_for(policy, "alice", None)
    overrides = await load_overrides(store._redis, policy.tenant)
    buckets = apply_overrides(
        buckets_for(policy, caller, NOW), caller, overrides, policy.timezone, NOW
    )

    levels = await store.reserve(
        "r-after",
        buckets,
        estimate_micro_usd=1_000_000,
        estimate_tokens=0,
        record={},
        now_ms=NOW_MS,
    )

    assert [249_000_000, 58, 749_000_000] == levels


async def test_switching_kind_leaves_the_bucket_to_start_afresh(
    admin, store, policy
) -> None:
    await _spend(store, policy, "alice", 250_000_000)

    shift = set_override(admin, policy.tenant, "user:alice", DAILY_20, now=NOW)

    view = budget_view(admin, policy.tenant, "user:alice", policy, NOW)
    assert (0, 20_000_000) == (shift, view.level_now_micro_usd)


async def test_switching_a_calendar_budget_to_a_refilled_one_starts_afresh(
    admin, store, policy
) -> None:
    await _spend(store, policy, "alice", 290_000_000)

    shift = set_override(admin, policy.tenant, "user:alice", REFILLED_40, now=NOW)

    view = budget_view(admin, policy.tenant, "user:alice", policy, NOW)
    assert (0, 40_000_000) == (shift, view.level_now_micro_usd)


async def test_removing_an_override_rebases_to_the_policy_budget(
    admin, store, policy
) -> None:
    await _spend(store, policy, "alice", 50_000_000)
    set_override(admin, policy.tenant, "user:alice", MONTHLY_500, now=NOW)
    fallback = policy.users["default"].budget

    removed = remove_override(
        admin, policy.tenant, "user:alice", fallback=fallback, now=NOW
    )
    again = remove_override(
        admin, policy.tenant, "user:alice", fallback=fallback, now=NOW
    )

    view = budget_view(admin, policy.tenant, "user:alice", policy, NOW)
    assert (True, False) == (removed, again)
    assert ("policy", 250_000_000) == (view.source, view.level_now_micro_usd)


async def test_list_shows_scopes_with_a_bucket_or_an_override(
    admin, store, policy
) -> None:
    await _spend(store, policy, "alice", 1_000_000)
    set_override(admin, policy.tenant, "project:search", MONTHLY_100, now=NOW)

    views = list_budget_views(admin, policy.tenant, policy, NOW)

    assert [
        ("project:search", "override", False),
        ("team:platform", "policy", True),
        ("user:alice", "policy", True),
    ] == [(v.scope, v.source, v.bucket is not None) for v in views]
