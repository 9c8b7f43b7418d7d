"""Reservation and settlement against a real redis-server and a real Redis
Cluster: every test that takes ``store`` runs on both."""

from __future__ import annotations

import asyncio
import time
import functools
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from extproc.budgets.leases import settle_expired_leases, sweep_forever
from extproc.budgets.store import Attribution, BucketSpec, BudgetStore, Settlement
from extproc.errors import BadRequest, BudgetExceeded, StoreUnavailable
from extproc.money import format_money

NOW_MS = 1_800_000_000_000
DAY_MS = 86_400_000


@pytest.fixture(params=["server", "cluster"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[BudgetStore]:
    if request.param == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        client = RedisCluster.from_url(cluster.url)
        await client.initialize()  # see extproc.budgets.clients
    else:
        client = aioredis.from_url(request.getfixturevalue("redis_server").url)
    yield BudgetStore(client, f"t-{uuid.uuid4().hex[:8]}", lease_ms=60_000)
    await client.aclose()


def _bucket(capacity: int, refill: int = 0, period_ms: int = DAY_MS) -> BucketSpec:
    return BucketSpec("user:alice", capacity, refill, period_ms)


async def _reserve(
    store, request_id, estimate, buckets, now_ms=NOW_MS, record=None, tokens=0
):
    return await store.reserve(
        request_id,
        buckets,
        estimate_micro_usd=estimate,
        estimate_tokens=tokens,
        record=record or {},
        now_ms=now_ms,
    )


def _settlement(request_id: str, cost: int) -> Settlement:
    return Settlement(request_id, cost, 10, 5, False, "metered", {})


ALICE = Attribution("alice", "openai", "gpt-4o")
# One monthly budget of 1000 in two months, for calls across the boundary.
MARCH = BucketSpec("user:alice", 1000, period_id="month:2027-03-01")
APRIL = BucketSpec("user:alice", 1000, period_id="month:2027-04-01")


async def _level(store: BudgetStore, scope: str = "user:alice") -> int:
    return int(await store._redis.hget(store.keys.bucket(scope), "level"))


async def _matching(store: BudgetStore, pattern: str) -> list[bytes]:
    # SCAN, not KEYS: redis-py's cluster client sends KEYS to one node only.
    return [key async for key in store._redis.scan_iter(match=pattern)]


async def test_new_bucket_starts_full_and_reservation_holds_estimate(store) -> None:
    await _reserve(store, "r1", 300, [_bucket(1000)], now_ms=NOW_MS)

    assert 700 == await _level(store)


async def test_reservation_over_the_level_is_refused_and_holds_nothing(store) -> None:
    await _reserve(store, "r1", 800, [_bucket(1000)], now_ms=NOW_MS)

    with pytest.raises(BudgetExceeded) as refused:
        await _reserve(store, "r2", 300, [_bucket(1000, 1000)], now_ms=NOW_MS)

    assert "user:alice" == refused.value.scope
    assert 200 == await _level(store)
    assert None is await store.reservation("r2")


async def test_refusal_says_when_the_refill_covers_the_estimate(store) -> None:
    bucket = _bucket(1000, refill=100, period_ms=1000)
    await _reserve(store, "r1", 1000, [bucket], now_ms=NOW_MS)
    await store.settle(_settlement("r1", 1000), [bucket], ALICE)

    with pytest.raises(BudgetExceeded) as refused:
        await _reserve(store, "r2", 250, [bucket], now_ms=NOW_MS)

    assert 3 == refused.value.retry_after_s


async def test_refusal_behind_calls_in_flight_says_retry_shortly(store) -> None:
    bucket = _bucket(1000)
    await _reserve(store, "r1", 900, [bucket], now_ms=NOW_MS)

    with pytest.raises(BudgetExceeded) as refused:
        await _reserve(store, "r2", 300, [bucket], now_ms=NOW_MS)

    assert 2 == refused.value.retry_after_s
    assert "held by calls in flight" in refused.value.message


async def test_settled_calls_no_longer_count_as_in_flight(store) -> None:
    bucket = _bucket(1000)
    await _reserve(store, "r1", 900, [bucket], now_ms=NOW_MS)
    await store.settle(_settlement("r1", 900), [bucket], ALICE)

    with pytest.raises(BudgetExceeded) as refused:
        await _reserve(store, "r2", 300, [bucket], now_ms=NOW_MS)

    assert "in flight" not in refused.value.message
    assert 0 == int(
        await store._redis.hget(store.keys.bucket("user:alice"), "inflight")
    )


async def test_release_gives_the_reservation_back_and_books_nothing(store) -> None:
    bucket = _bucket(1000)
    await _reserve(store, "r1", 300, [bucket], now_ms=NOW_MS)

    released = await store.release("r1", [bucket])
    again = await store.settle(_settlement("r1", 120), [bucket], ALICE)

    assert (True, False, 1000) == (released, again, await _level(store))
    assert 0 == await store._redis.xlen(store.keys.ledger)
    assert 0 == await settle_expired_leases(store, now_ms=NOW_MS + 10**9)


async def test_settlement_replaces_the_estimate_with_the_cost(store) -> None:
    await _reserve(store, "r1", 300, [_bucket(1000)], now_ms=NOW_MS)

    booked = await store.settle(_settlement("r1", 120), [_bucket(1000)], ALICE)

    assert booked is True
    assert 880 == await _level(store)


async def test_settlement_replayed_charges_once(store) -> None:
    await _reserve(store, "r1", 300, [_bucket(1000)], now_ms=NOW_MS)

    first = await store.settle(_settlement("r1", 120), [_bucket(1000)], ALICE)
    second = await store.settle(_settlement("r1", 120), [_bucket(1000)], ALICE)

    assert (True, False) == (first, second)
    assert 880 == await _level(store)
    assert 1 == await store._redis.xlen(store.keys.ledger)


async def test_cost_above_estimate_drives_the_level_below_zero(store) -> None:
    await _reserve(store, "r1", 100, [_bucket(1000)], now_ms=NOW_MS)

    await store.settle(_settlement("r1", 1500), [_bucket(1000)], ALICE)

    assert -500 == await _level(store)


async def test_refill_is_pro_rata_and_capped(store) -> None:
    bucket = _bucket(1000, refill=1000, period_ms=10_000)
    await _reserve(store, "r1", 1000, [bucket], now_ms=NOW_MS)
    await store.settle(_settlement("r1", 1000), [_bucket(1000)], ALICE)

    await _reserve(store, "r2", 0, [bucket], now_ms=NOW_MS + 2_500)
    assert 250 == await _level(store)

    await _reserve(store, "r3", 0, [bucket], now_ms=NOW_MS + 60_000)
    assert 1000 == await _level(store)


async def test_spend_is_booked_by_identity_provider_and_model(store) -> None:
    await _reserve(store, "r1", 300, [_bucket(1000)], now_ms=NOW_MS)
    await store.settle(_settlement("r1", 120), [_bucket(1000)], ALICE)

    keys = await _matching(store, store.keys.spend("*"))
    fields = await store._redis.hgetall(keys[0])

    prefix = ALICE.spend_prefix().encode()
    assert b"120" == fields[prefix + b"cost_micro_usd"]
    assert b"1" == fields[prefix + b"requests"]


async def test_concurrent_reservations_never_overshoot(store) -> None:
    bucket = _bucket(1000)

    async def attempt(i: int) -> bool:
        try:
            await _reserve(store, f"r{i}", 300, [bucket], now_ms=NOW_MS)
        except BudgetExceeded:
            return False
        return True

    results = await asyncio.gather(*(attempt(i) for i in range(50)))

    assert 3 == sum(results)
    assert 100 == await _level(store)


async def test_expired_lease_is_charged_at_the_estimate_once(store) -> None:
    await _reserve(
        store, "r1", 300, [_bucket(1000)], now_ms=NOW_MS, record={"identity": "alice"}
    )

    charged = await settle_expired_leases(store, now_ms=NOW_MS + 61_000)
    again = await settle_expired_leases(store, now_ms=NOW_MS + 62_000)
    late = await store.settle(_settlement("r1", 10), [_bucket(1000)], ALICE)

    assert (1, 0, False) == (charged, again, late)
    assert 700 == await _level(store)


async def test_sweep_charges_nothing_until_redis_has_answered_for_the_grace(
    store,
) -> None:
    long_ago_ms = int(time.time() * 1000) - 3_600_000
    await _reserve(store, "r1", 300, [_bucket(1000)], now_ms=long_ago_ms)

    sweep = asyncio.create_task(sweep_forever(lambda: store, 20, grace_ms=1000))
    await asyncio.sleep(0.3)
    during_grace = await store._redis.xlen(store.keys.ledger)
    after_grace = 0
    for _ in range(100):  # up to 10 s on a slow machine
        await asyncio.sleep(0.1)
        after_grace = await store._redis.xlen(store.keys.ledger)
        if after_grace:
            break
    sweep.cancel()

    assert (0, 1) == (during_grace, after_grace)


async def test_lease_not_yet_expired_is_left_alone(store) -> None:
    await _reserve(store, "r1", 300, [_bucket(1000)], now_ms=NOW_MS)

    assert 0 == await settle_expired_leases(store, now_ms=NOW_MS + 59_000)


async def test_unreachable_redis_is_store_unavailable() -> None:
    client = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    store = BudgetStore(client, "t", lease_ms=1000)

    with pytest.raises(StoreUnavailable):
        await _reserve(store, "r1", 1, [_bucket(10)], now_ms=NOW_MS)
    await client.aclose()


async def test_refusal_on_one_scope_holds_nothing_on_the_others(store) -> None:
    user, team = BucketSpec("user:alice", 1000), BucketSpec("team:platform", 200)

    with pytest.raises(BudgetExceeded) as refused:
        await _reserve(store, "r1", 300, [user, team])

    assert "team:platform" == refused.value.scope
    assert not await store._redis.exists(store.keys.bucket("user:alice"))


async def test_levels_after_the_hold_are_returned_per_bucket(store) -> None:
    user, team = BucketSpec("user:alice", 1000), BucketSpec("team:platform", 5000)

    levels = await _reserve(store, "r1", 300, [user, team])

    assert [700, 4700] == levels


async def test_calendar_bucket_resets_when_the_period_changes(store) -> None:
    march = BucketSpec(
        "user:alice", 1000, period_id="month:2027-03-01", resets_at_ms=NOW_MS + 1000
    )
    april = BucketSpec("user:alice", 1000, period_id="month:2027-04-01")
    await _reserve(store, "r1", 900, [march])
    await store.settle(_settlement("r1", 900), [march], ALICE)

    with pytest.raises(BudgetExceeded) as refused:
        await _reserve(store, "r2", 300, [march])
    await _reserve(store, "r3", 300, [april])

    assert 1 == refused.value.retry_after_s
    assert 700 == await _level(store)


async def test_request_rate_limit_counts_requests_not_money(store) -> None:
    rpm = BucketSpec(
        "user:alice#rpm", 2, refill=2, refill_period_ms=60_000, unit="requests"
    )
    await _reserve(store, "r1", 5000, [rpm])
    await _reserve(store, "r2", 5000, [rpm])

    with pytest.raises(BudgetExceeded) as refused:
        await _reserve(store, "r3", 1, [rpm])

    assert "rate limit of user:alice#rpm" in refused.value.message
    assert 30 == refused.value.retry_after_s


async def test_token_rate_limit_settles_to_the_tokens_used(store) -> None:
    tpm = BucketSpec(
        "user:alice#tpm", 1000, refill=1000, refill_period_ms=60_000, unit="tokens"
    )
    await _reserve(store, "r1", 50, [tpm], tokens=600)

    await store.settle(_settlement("r1", 20), [tpm], ALICE)

    assert 985 == await _level(store, "user:alice#tpm")


async def _events(store) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in await store._redis.xrange(store.keys.events)]


async def test_soft_limit_is_reported_once_per_period(store) -> None:
    march = BucketSpec(
        "team:platform", 1000, period_id="month:2027-03-01", soft_limits=(50, 100)
    )
    for i, cost in enumerate([300, 300, 100]):
        await _reserve(store, f"r{i}", cost, [march])
        await store.settle(_settlement(f"r{i}", cost), [march], ALICE)
    april = BucketSpec(
        "team:platform", 1000, period_id="month:2027-04-01", soft_limits=(50, 100)
    )
    await _reserve(store, "r9", 600, [april])
    await store.settle(_settlement("r9", 600), [april], ALICE)

    events = await _events(store)

    assert [(b"50", b"month:2027-03-01"), (b"50", b"month:2027-04-01")] == [
        (e[b"percent"], e[b"period"]) for e in events
    ]
    assert (b"600", b"1000") == (events[0][b"spent"], events[0][b"capacity"])


async def test_custom_labels_are_booked_as_spend_dimensions(store) -> None:
    labelled = Attribution(
        "alice", "openai", "gpt-4o", labels=(("workflow", "nightly"),)
    )
    await _reserve(store, "r1", 300, [_bucket(1000)])

    await store.settle(_settlement("r1", 120), [_bucket(1000)], labelled)

    day_keys = await _matching(store, store.keys.spend("*"))
    fields = await store._redis.hgetall(day_keys[0])
    assert b"120" == fields[b'["label", "workflow", "nightly"]|cost_micro_usd']


async def test_shared_team_budget_holds_under_concurrent_users(store) -> None:
    team = BucketSpec("team:platform", 1000)

    async def attempt(i: int) -> bool:
        user = BucketSpec(f"user:u{i % 5}", 10_000)
        try:
            await _reserve(store, f"r{i}", 300, [user, team])
        except BudgetExceeded:
            return False
        return True

    results = await asyncio.gather(*(attempt(i) for i in range(50)))

    assert 3 == sum(results)
    assert 100 == await _level(store, "team:platform")


async def test_extended_lease_is_not_swept_while_the_call_runs(store) -> None:
    await _reserve(store, "r1", 300, [_bucket(1000)])

    await store.extend_leases(["r1", "never-held"], now_ms=NOW_MS + 50_000)

    assert 0 == await settle_expired_leases(store, now_ms=NOW_MS + 61_000)
    assert 1 == await settle_expired_leases(store, now_ms=NOW_MS + 111_000)
    assert 0 == await store._redis.zcard(store.keys.leases)


async def test_raised_budget_keeps_what_was_spent(store) -> None:
    await _reserve(store, "r1", 300, [BucketSpec("user:alice", 1000)])
    await store.settle(_settlement("r1", 300), [BucketSpec("user:alice", 1000)], ALICE)

    levels = await _reserve(store, "r2", 0, [BucketSpec("user:alice", 5000)])

    assert [4700] == levels


async def test_lowered_budget_does_not_forget_what_was_spent(store) -> None:
    await _reserve(store, "r1", 300, [BucketSpec("user:alice", 1000)])
    await store.settle(_settlement("r1", 300), [BucketSpec("user:alice", 1000)], ALICE)

    with pytest.raises(BudgetExceeded):
        await _reserve(store, "r2", 300, [BucketSpec("user:alice", 500)])
    assert [200] == await _reserve(store, "r3", 0, [BucketSpec("user:alice", 500)])


async def test_refusal_speaks_the_organisations_currency(redis_server) -> None:
    client = aioredis.from_url(redis_server.url)
    money = functools.partial(format_money, code="EUR", per_usd=Decimal("0.92"))
    store = BudgetStore(
        client, "cur-" + uuid.uuid4().hex[:6], lease_ms=60_000, money=money
    )
    try:
        await _reserve(store, "r1", 900_000, [BucketSpec("user:a", 1_000_000)])
        with pytest.raises(BudgetExceeded) as refused:
            await _reserve(store, "r2", 500_000, [BucketSpec("user:a", 1_000_000)])
    finally:
        await client.aclose()

    assert "estimated 0.460000 EUR, available 0.092000 EUR" in refused.value.message


async def test_bucket_first_charged_without_a_reservation_still_admits(store) -> None:
    rpm = BucketSpec("user:newcomer#rpm", 5, 5, 60_000, unit="requests")
    await store.settle(_settlement("r1", 120), [rpm], ALICE, reserved=False)

    levels = await _reserve(store, "r2", 100, [rpm], now_ms=NOW_MS)

    assert [3] == levels


async def test_calendar_budget_first_charged_without_a_reservation_keeps_it(
    store,
) -> None:
    month = BucketSpec("user:alice", 1000, period_id="month:2027-01-01")
    await store.settle(_settlement("r1", 300), [month], ALICE, reserved=False)

    levels = await _reserve(store, "r2", 100, [month], now_ms=NOW_MS)

    assert [600] == levels


async def test_estimate_past_exact_integers_is_refused_and_holds_nothing(
    store,
) -> None:
    rpm = BucketSpec("user:alice#rpm", 5, 5, 60_000, unit="requests")

    with pytest.raises(BadRequest):
        await _reserve(store, "r1", 10**20, [rpm], now_ms=NOW_MS)

    assert None is await store.reservation("r1")
    assert [] == await store.expired_leases(NOW_MS + 10**9)


async def test_gateway_with_a_lagging_clock_does_not_reset_a_new_period(
    store,
) -> None:
    await _reserve(store, "r1", 300, [APRIL])

    await _reserve(store, "r2", 100, [MARCH])
    levels = await _reserve(store, "r3", 100, [APRIL])

    assert [500] == levels


async def test_leases_whose_reservation_is_gone_do_not_block_the_sweep(store) -> None:
    # A reservation hash can vanish before its lease (evicted by a volatile
    # maxmemory policy): its lease must not hold the sweep's place forever.
    await store._redis.zadd(
        store.keys.leases, {f"gone-{i}": NOW_MS - 1000 + i for i in range(100)}
    )
    await _reserve(store, "r1", 300, [_bucket(1000)], now_ms=NOW_MS)

    first = await settle_expired_leases(store, now_ms=NOW_MS + 61_000)
    second = await settle_expired_leases(store, now_ms=NOW_MS + 62_000)

    assert 1 == first + second
    assert 0 == await store._redis.zcard(store.keys.leases)


async def test_direct_charge_of_a_call_whose_hold_was_made_gives_the_hold_back(
    store,
) -> None:
    # The reservation ran, but its reply timed out and the call was admitted
    # unreserved: the settlement comes without a hold, yet one stands.
    bucket = _bucket(1000)
    await _reserve(store, "r1", 400, [bucket], now_ms=NOW_MS)

    await store.settle(_settlement("r1", 120), [bucket], ALICE, reserved=False)

    inflight = await store._redis.hget(store.keys.bucket("user:alice"), "inflight")
    assert (880, 0) == (await _level(store), int(inflight))


async def test_settlement_whose_reservation_redis_lost_is_charged(
    store, caplog
) -> None:
    # Redis restarted without persistence (or evicted the keys) while the
    # call ran: its cost must still reach the budget and the ledger.
    bucket = _bucket(1000)
    await _reserve(store, "r1", 300, [bucket], now_ms=NOW_MS)
    await store._redis.delete(
        store.keys.reservation("r1"), store.keys.bucket("user:alice")
    )

    booked = await store.settle(_settlement("r1", 120), [bucket], ALICE)
    again = await store.settle(_settlement("r1", 120), [bucket], ALICE)

    assert (True, False) == (booked, again)
    assert [880] == await _reserve(store, "r2", 0, [bucket], now_ms=NOW_MS)
    assert 1 == await store._redis.xlen(store.keys.ledger)
    assert "reservation lost by redis" in caplog.text


async def test_lease_charge_of_a_lost_reservation_books_nothing(store) -> None:
    # The sweep's cost of -1 means "what was held": with nothing held there
    # is no amount to charge.
    bucket = _bucket(1000)
    await _reserve(store, "r1", 300, [bucket], now_ms=NOW_MS)
    await store._redis.delete(store.keys.reservation("r1"))

    booked = await store.settle(_settlement("r1", -1), [bucket], ALICE)

    assert booked is False
    assert 0 == await store._redis.xlen(store.keys.ledger)


async def test_calendar_budget_reloaded_as_refilled_starts_afresh_and_frees_holds(
    store,
) -> None:
    monthly = MARCH
    refilled = BucketSpec("user:alice", 1000, refill=0)
    await _reserve(store, "r1", 400, [monthly])
    levels = await _reserve(store, "r2", 0, [refilled])

    await store.settle(_settlement("r1", 100), [monthly], ALICE)

    assert ([1000], 1000) == (levels, await _level(store))


async def test_call_held_in_one_period_and_settled_in_the_next_is_not_paid_twice(
    store,
) -> None:
    await _reserve(store, "r1", 400, [MARCH])
    await _reserve(store, "r2", 0, [APRIL])

    await store.settle(_settlement("r1", 100), [MARCH], ALICE)

    assert 1000 == await _level(store)


async def test_cost_past_the_hold_of_a_closed_period_is_paid_by_the_next(
    store,
) -> None:
    await _reserve(store, "r1", 400, [MARCH])
    await _reserve(store, "r2", 0, [APRIL])

    await store.settle(_settlement("r1", 700), [MARCH], ALICE)

    assert 700 == await _level(store)
    assert 0 == int(
        await store._redis.hget(store.keys.bucket("user:alice"), "inflight")
    )


async def test_soft_limit_counts_spend_not_the_holds_of_calls_in_flight(store) -> None:
    march = BucketSpec(
        "team:platform", 1000, period_id="month:2027-03-01", soft_limits=(80,)
    )
    await _reserve(store, "long", 900, [march])
    await _reserve(store, "short", 10, [march])
    await store.settle(_settlement("short", 10), [march], ALICE)
    await store.settle(_settlement("long", 20), [march], ALICE)
    await _reserve(store, "big", 800, [march])
    await store.settle(_settlement("big", 800), [march], ALICE)

    events = await _events(store)

    assert [(b"80", b"830")] == [(e[b"percent"], e[b"spent"]) for e in events]


async def test_holds_of_a_closed_period_are_not_in_flight_in_the_next(store) -> None:
    key = store.keys.bucket("user:alice")
    await _reserve(store, "r1", 400, [MARCH])
    await _reserve(store, "r2", 300, [APRIL])
    after_reset = int(await store._redis.hget(key, "inflight"))

    await store.settle(_settlement("r1", 100), [MARCH], ALICE)

    assert (300, 300) == (after_reset, int(await store._redis.hget(key, "inflight")))


async def test_soft_limit_of_a_refilled_budget_is_not_reported_per_call(store) -> None:
    bucket = BucketSpec(
        "team:platform",
        1000,
        refill=1000,
        refill_period_ms=1_000_000,
        soft_limits=(80,),
    )
    calls = [(0, 850, 850), (60_000, 100, 5), (70_000, 100, 60)]
    for i, (after_ms, estimate, cost) in enumerate(calls):
        now_ms = NOW_MS + after_ms
        await _reserve(store, f"r{i}", estimate, [bucket], now_ms=now_ms)
        await store.settle(_settlement(f"r{i}", cost), [bucket], ALICE)

    events = await _events(store)

    assert [b"850"] == [e[b"spent"] for e in events]


async def test_soft_limit_of_a_refilled_budget_is_reported_again_once_refilled(
    store,
) -> None:
    bucket = BucketSpec(
        "team:platform",
        1000,
        refill=1000,
        refill_period_ms=1_000_000,
        soft_limits=(80,),
    )
    for i, now_ms in enumerate([NOW_MS, NOW_MS + 1_000_000]):
        await _reserve(store, f"r{i}", 850, [bucket], now_ms=now_ms)
        await store.settle(_settlement(f"r{i}", 850), [bucket], ALICE)

    events = await _events(store)

    assert [b"850", b"850"] == [e[b"spent"] for e in events]
