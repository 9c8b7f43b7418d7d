"""The gateway's Redis clients under bursts of concurrent calls."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from extproc.budgets.clients import MAX_CONNECTIONS, open_async_client
from extproc.budgets.store import BucketSpec, BudgetStore

NOW_MS = 1_800_000_000_000
BURST = 5 * MAX_CONNECTIONS


@pytest.fixture(params=["server", "cluster"])
def redis(request: pytest.FixtureRequest) -> tuple[str, bool]:
    cluster = request.param == "cluster"
    fixture = "redis_cluster" if cluster else "redis_server"
    return request.getfixturevalue(fixture).url, cluster


async def test_a_burst_past_the_pool_size_waits_for_connections(redis) -> None:
    """More calls in flight than the pool has connections: each waits its
    turn instead of failing with "too many connections" (which the gateway
    would answer with a 503, or a settlement sent to the journal)."""
    url, cluster = redis
    client = await open_async_client(url, cluster=cluster, timeout_ms=2_000)
    store = BudgetStore(client, f"t-{uuid.uuid4().hex[:8]}", lease_ms=60_000)
    bucket = BucketSpec("user:alice", 10**12, 0, 86_400_000)
    try:
        levels = await asyncio.gather(
            *(
                store.reserve(
                    f"r{n}",
                    [bucket],
                    estimate_micro_usd=1,
                    estimate_tokens=0,
                    record={},
                    now_ms=NOW_MS,
                )
                for n in range(BURST)
            )
        )
    finally:
        await client.aclose()

    assert BURST == len(levels)
    assert 10**12 - BURST == min(level for [level] in levels)
