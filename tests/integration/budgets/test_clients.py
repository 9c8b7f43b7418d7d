"""The gateway's Redis clients under bursts of concurrent calls."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

import pytest

from extproc.budgets.clients import MAX_CONNECTIONS, POOL_WAIT_S, open_async_client
from extproc.budgets.store import BucketSpec, BudgetStore
from extproc.errors import StoreUnavailable
from extproc.local import RedisProcess

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
    try:
        levels = await asyncio.gather(
            *(_reserve_one_micro_usd(store, f"r{n}") for n in range(BURST))
        )
    finally:
        await client.aclose()

    assert BURST == len(levels)
    assert 10**12 - BURST == min(level for [level] in levels)


async def test_a_burst_against_a_hung_redis_fails_fast_and_recovers(tmp_path) -> None:
    """Redis stops answering (SIGSTOP) under a burst twice the pool's size:
    every call fails as "maybe applied" (each was sent, the later ones on
    connections the first freed when they timed out), none waits much past
    two command timeouts, and once Redis answers again the client works."""
    with RedisProcess(workdir=tmp_path) as redis:
        client = await open_async_client(redis.url, timeout_ms=200)
        store = BudgetStore(client, "hung", lease_ms=60_000)

        async def reserve(request_id: str) -> list[int]:
            return await _reserve_one_micro_usd(store, request_id)

        try:
            await reserve("warm")  # the script is loaded, a connection open
            os.kill(redis.pid, signal.SIGSTOP)
            started = time.monotonic()
            try:
                outcomes = await asyncio.gather(
                    *(reserve(f"hung-{n}") for n in range(2 * MAX_CONNECTIONS)),
                    return_exceptions=True,
                )
            finally:
                os.kill(redis.pid, signal.SIGCONT)
            elapsed = time.monotonic() - started

            assert all(isinstance(o, StoreUnavailable) for o in outcomes)
            assert all(o.maybe_applied for o in outcomes)
            assert elapsed < POOL_WAIT_S + 2 * 0.2 + 1.0  # waits, timeouts, slack
            # Commands already written when their reply timed out may still
            # run once Redis wakes: the gateway gives such holds back when
            # the call closes (maybe_applied), which is not this test's part.
            [level] = await reserve("after")
            assert 10**12 - 2 - len(outcomes) <= level <= 10**12 - 2
        finally:
            await client.aclose()


class _Endpoint:
    """A TCP endpoint that forwards each new connection to the Redis it
    names now, as a managed Redis's primary endpoint does across a failover:
    connections opened before a switch stay with the old node."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._forward, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _forward(self, reader, writer) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)

        async def pipe(src, dst) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_a_failover_behind_one_endpoint_reaches_the_new_primary(
    tmp_path,
) -> None:
    """The primary is demoted and the endpoint names the promoted replica:
    pooled connections to the old primary answer READONLY, and are replaced
    by new ones instead of failing every call until a restart."""
    with (
        RedisProcess(workdir=tmp_path / "a") as old,
        RedisProcess(workdir=tmp_path / "b") as new,
    ):
        endpoint = _Endpoint(old.port)
        port = await endpoint.start()
        # A generous timeout: the promoted server forks to sync its new
        # replica, and on a busy machine a 250 ms connect can run out then;
        # what is tested is the READONLY reply, not the timeout.
        client = await open_async_client(
            f"redis://127.0.0.1:{port}/0", timeout_ms=2_000
        )
        store = BudgetStore(client, "failover", lease_ms=60_000)

        async def reserve(request_id: str) -> list[int]:
            return await _reserve_one_micro_usd(store, request_id)

        try:
            await asyncio.gather(*(reserve(f"before-{n}") for n in range(8)))
            await client.execute_command("REPLICAOF", "127.0.0.1", str(new.port))
            endpoint.port = new.port

            levels = [await reserve(f"after-{n}") for n in range(16)]
        finally:
            await client.aclose()
            endpoint.server.close()

    assert 16 == len(levels)


async def _reserve_one_micro_usd(store: BudgetStore, request_id: str) -> list[int]:
    """Reserve 1 µUSD for ``request_id`` on a bucket too large to refuse it."""
    bucket = BucketSpec("user:alice", 10**12, 0, 86_400_000)
    return await store.reserve(
        request_id,
        [bucket],
        estimate_micro_usd=1,
        estimate_tokens=0,
        record={},
        now_ms=NOW_MS,
    )
