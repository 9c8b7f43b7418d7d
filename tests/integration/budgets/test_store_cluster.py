"""What is particular to Redis Cluster: one slot per tenant, and its errors."""

from __future__ import annotations

import uuid

import pytest
from redis.asyncio.cluster import RedisCluster

from extproc.budgets.clients import open_async_client
from extproc.budgets.store import Attribution, BucketSpec, BudgetStore, Settlement
from extproc.errors import StoreUnavailable

NOW_MS = 1_800_000_000_000
UNREACHABLE = "redis://127.0.0.1:1"


async def test_every_key_of_a_tenant_lives_in_one_slot(redis_cluster) -> None:
    client = await open_async_client(redis_cluster.url, cluster=True)
    store = BudgetStore(client, f"t-{uuid.uuid4().hex[:8]}", lease_ms=60_000)
    buckets = [BucketSpec("user:alice", 1000), BucketSpec("team:platform", 5000)]
    await store.reserve(
        "r1",
        buckets,
        estimate_micro_usd=300,
        estimate_tokens=0,
        record={},
        now_ms=NOW_MS,
    )
    await store.settle(
        Settlement("r1", 120, 1, 1, False, "metered", {}),
        buckets,
        Attribution("alice", "openai", "gpt-4o"),
    )

    names = [name async for name in client.scan_iter(match=f"{store.keys.prefix}*")]
    slots = {client.keyslot(name) for name in names}

    await client.aclose()
    assert len(names) >= 5  # buckets, spend, ledger, settled marker
    assert 1 == len(slots)


async def test_opening_an_unreachable_cluster_is_store_unavailable() -> None:
    with pytest.raises(StoreUnavailable):
        await open_async_client(UNREACHABLE, cluster=True, timeout_ms=200)


async def test_unreachable_cluster_is_store_unavailable_to_the_store() -> None:
    client = RedisCluster.from_url(UNREACHABLE, socket_connect_timeout=0.2)
    store = BudgetStore(client, "t", lease_ms=1000)

    try:
        with pytest.raises(StoreUnavailable):
            await store.reserve(
                "r1",
                [BucketSpec("user:alice", 10)],
                estimate_micro_usd=1,
                estimate_tokens=0,
                record={},
                now_ms=NOW_MS,
            )
    finally:
        await client.aclose()
