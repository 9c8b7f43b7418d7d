"""Redis clients for one server or a Redis Cluster, and their errors.

Every key of a tenant carries the hash tag ``{tenant}``, so the same code
runs on a single redis-server and on a cluster: each Lua script, and each
multi-key command, touches one slot. Only the client class differs.

redis-py raises two families of errors: ``RedisError`` and, from the cluster
client, ``RedisClusterException``, which does not derive from it (for example
when no node of the cluster can be reached at start). ``STORE_ERRORS`` holds
both; ``store_errors`` turns either into ``StoreUnavailable`` with the cause
chained.

An asyncio cluster client must be initialised (``await client.initialize()``,
or ``open_async_client``) before concurrent use: redis-py 8.1 fails some of
the first commands with ``AttributeError`` when many coroutines start on an
uninitialised ``RedisCluster`` at once.

Bursts: redis-py's default pool raises ``MaxConnectionsError`` once 100
commands are in flight, which the gateway would turn into 503s and journaled
settlements on a healthy Redis. The single-server client waits for a free
connection instead (``MAX_CONNECTIONS`` of them, ``POOL_WAIT_S`` at most);
the cluster client, which cannot wait, may open up to
``MAX_CLUSTER_CONNECTIONS`` per node (Redis's own default client limit).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.exceptions import RedisClusterException, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from extproc.errors import StoreUnavailable

STORE_ERRORS: tuple[type[Exception], ...] = (RedisError, RedisClusterException)

AsyncClient = aioredis.Redis | AsyncRedisCluster
SyncClient = redis.Redis | redis.RedisCluster

MAX_CONNECTIONS = 64
# A command may wait this long for a connection, then its own timeout: well
# inside Envoy's ext_proc message timeout (2 s in envoy/), so that a burst
# against a slow Redis gets the gateway's own 503, not Envoy's.
POOL_WAIT_S = 1.0
MAX_CLUSTER_CONNECTIONS = 10_000


def async_client(
    url: str, *, cluster: bool = False, timeout_ms: int = 250
) -> AsyncClient:
    """An asyncio client of ``url``; a cluster client when ``cluster``.

    ``url`` names any one node of a cluster; the client discovers the rest.
    """
    timeout_s = timeout_ms / 1000
    if cluster:
        return AsyncRedisCluster.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            max_connections=MAX_CLUSTER_CONNECTIONS,
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=max(POOL_WAIT_S, timeout_s),
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        health_check_interval=30,
    )
    return aioredis.Redis(connection_pool=pool)


async def open_async_client(
    url: str, *, cluster: bool = False, timeout_ms: int = 250
) -> AsyncClient:
    """``async_client``, with a cluster client initialised (slots and nodes
    read) before it is returned. Raises ``StoreUnavailable`` when no node of
    the cluster answers; a single-server client connects on first use.
    """
    client = async_client(url, cluster=cluster, timeout_ms=timeout_ms)
    if isinstance(client, AsyncRedisCluster):
        with store_errors("reading the cluster's slots"):
            await client.initialize()
    return client


def sync_client(
    url: str, *, cluster: bool = False, timeout_ms: int = 2000
) -> SyncClient:
    """A blocking client of ``url`` for commands and admin calls.

    The cluster client reads the cluster's slots when it is made, so it
    raises ``StoreUnavailable`` here when no node answers.
    """
    timeout_s = timeout_ms / 1000
    if cluster:
        with store_errors("reading the cluster's slots"):
            return redis.RedisCluster.from_url(
                url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
            )
    return redis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )


def answered_with_error(exc: StoreUnavailable) -> bool:
    """True when Redis answered the command with an error (a script that
    failed on this input, say) rather than not answering: retrying other
    work may still succeed, retrying this one alone will not help soon."""
    return isinstance(exc.__cause__, ResponseError)


@contextmanager
def store_errors(doing: str) -> Iterator[None]:
    """Translate a Redis error raised in the block into ``StoreUnavailable``.

    ``doing`` completes the sentence "redis did not answer while ...".
    """
    try:
        yield
    except STORE_ERRORS as exc:
        raise StoreUnavailable(
            f"redis did not answer while {doing}: {type(exc).__name__}",
            maybe_applied=isinstance(exc, RedisTimeoutError),
        ) from exc
