"""Reservation and settlement against a real redis-server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from extproc.budgets.leases import settle_expired_leases
from extproc.budgets.store import Attribution, BucketSpec, BudgetStore, Settlement
from extproc.errors import BudgetExceeded, StoreUnavailable
from extproc.local import RedisProcess

NOW_MS = 1_800_000_000_000
DAY_MS = 86_400_000


@pytest.fixture
async def store(redis_server: RedisProcess) -> AsyncIterator[BudgetStore]:
    client = aioredis.from_url(redis_server.url)
    yield BudgetStore(client, f"t-{uuid.uuid4().hex[:8]}", lease_ms=60_000)
    await client.aclose()


def _bucket(capacity: int, refill: int = 0, period_ms: int = DAY_MS) -> BucketSpec:
    return BucketSpec("user:alice", capacity, refill, period_ms)


def _settlement(request_id: str, cost: int) -> Settlement:
    return Settlement(request_id, cost, 10, 5, False, "metered", {})


ALICE = Attribution("alice", "openai", "gpt-4o")


async def _level(store: BudgetStore, scope: str = "user:alice") -> int:
    return int(await store._redis.hget(store.keys.bucket(scope), "level"))


async def test_new_bucket_starts_full_and_reservation_holds_estimate(store) -> None:
    await store.reserve("r1", 300, [_bucket(1000)], record={}, now_ms=NOW_MS)

    assert 700 == await _level(store)


async def test_reservation_over_the_level_is_refused_and_holds_nothing(store) -> None:
    await store.reserve("r1", 800, [_bucket(1000)], record={}, now_ms=NOW_MS)

    with pytest.raises(BudgetExceeded) as refused:
        await store.reserve("r2", 300, [_bucket(1000, 1000)], record={}, now_ms=NOW_MS)

    assert "user:alice" == refused.value.scope
    assert 200 == await _level(store)
    assert None is await store.reservation("r2")


async def test_refusal_says_when_the_refill_covers_the_estimate(store) -> None:
    bucket = _bucket(1000, refill=100, period_ms=1000)
    await store.reserve("r1", 1000, [bucket], record={}, now_ms=NOW_MS)

    with pytest.raises(BudgetExceeded) as refused:
        await store.reserve("r2", 250, [bucket], record={}, now_ms=NOW_MS)

    assert 3 == refused.value.retry_after_s


async def test_settlement_replaces_the_estimate_with_the_cost(store) -> None:
    await store.reserve("r1", 300, [_bucket(1000)], record={}, now_ms=NOW_MS)

    booked = await store.settle(_settlement("r1", 120), ["user:alice"], ALICE)

    assert booked is True
    assert 880 == await _level(store)


async def test_settlement_replayed_charges_once(store) -> None:
    await store.reserve("r1", 300, [_bucket(1000)], record={}, now_ms=NOW_MS)

    first = await store.settle(_settlement("r1", 120), ["user:alice"], ALICE)
    second = await store.settle(_settlement("r1", 120), ["user:alice"], ALICE)

    assert (True, False) == (first, second)
    assert 880 == await _level(store)
    assert 1 == await store._redis.xlen(store.keys.ledger)


async def test_cost_above_estimate_drives_the_level_below_zero(store) -> None:
    await store.reserve("r1", 100, [_bucket(1000)], record={}, now_ms=NOW_MS)

    await store.settle(_settlement("r1", 1500), ["user:alice"], ALICE)

    assert -500 == await _level(store)


async def test_refill_is_pro_rata_and_capped(store) -> None:
    bucket = _bucket(1000, refill=1000, period_ms=10_000)
    await store.reserve("r1", 1000, [bucket], record={}, now_ms=NOW_MS)
    await store.settle(_settlement("r1", 1000), ["user:alice"], ALICE)

    await store.reserve("r2", 0, [bucket], record={}, now_ms=NOW_MS + 2_500)
    assert 250 == await _level(store)

    await store.reserve("r3", 0, [bucket], record={}, now_ms=NOW_MS + 60_000)
    assert 1000 == await _level(store)


async def test_spend_is_booked_by_identity_provider_and_model(store) -> None:
    await store.reserve("r1", 300, [_bucket(1000)], record={}, now_ms=NOW_MS)
    await store.settle(_settlement("r1", 120), ["user:alice"], ALICE)

    keys = await store._redis.keys(store.keys.spend("*"))
    fields = await store._redis.hgetall(keys[0])

    prefix = ALICE.spend_prefix().encode()
    assert b"120" == fields[prefix + b"cost_micro_usd"]
    assert b"1" == fields[prefix + b"requests"]


async def test_concurrent_reservations_never_overshoot(store) -> None:
    bucket = _bucket(1000)

    async def attempt(i: int) -> bool:
        try:
            await store.reserve(f"r{i}", 300, [bucket], record={}, now_ms=NOW_MS)
        except BudgetExceeded:
            return False
        return True

    results = await asyncio.gather(*(attempt(i) for i in range(50)))

    assert 3 == sum(results)
    assert 100 == await _level(store)


async def test_expired_lease_is_charged_at_the_estimate_once(store) -> None:
    await store.reserve("r1", 300, [_bucket(1000)], record={"identity": "alice"},
                        now_ms=NOW_MS)

    charged = await settle_expired_leases(store, now_ms=NOW_MS + 61_000)
    again = await settle_expired_leases(store, now_ms=NOW_MS + 62_000)
    late = await store.settle(_settlement("r1", 10), ["user:alice"], ALICE)

    assert (1, 0, False) == (charged, again, late)
    assert 700 == await _level(store)


async def test_lease_not_yet_expired_is_left_alone(store) -> None:
    await store.reserve("r1", 300, [_bucket(1000)], record={}, now_ms=NOW_MS)

    assert 0 == await settle_expired_leases(store, now_ms=NOW_MS + 59_000)


async def test_unreachable_redis_is_store_unavailable() -> None:
    client = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    store = BudgetStore(client, "t", lease_ms=1000)

    with pytest.raises(StoreUnavailable):
        await store.reserve("r1", 1, [_bucket(10)], record={}, now_ms=NOW_MS)
    await client.aclose()
