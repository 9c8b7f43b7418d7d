"""Redis clients for one server or a Redis Cluster, and their errors.

Every key of a tenant carries the hash tag ``{tenant}``, so the same code
runs on a single redis-server and on a cluster: each Lua script, and each
multi-key command, touches one slot. Only the client class differs.

redis-py raises two families of errors: ``RedisError`` and, from the cluster
client, ``RedisClusterException``, which does not derive from it (for example
when no node of the cluster can be reached at start). ``STORE_ERRORS`` holds
both; ``store_errors`` turns either into ``StoreUnavailable`` with the cause
chained, and ``answered_with_error`` tells an error of one command from a
state of the server (``READONLY`` after a failover, ``OOM``) that fails all.

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
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import (
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
)
from redis.retry import Retry
from redis.exceptions import TimeoutError as RedisTimeoutError

from extproc.errors import ConfigError, StoreUnavailable

STORE_ERRORS: tuple[type[Exception], ...] = (RedisError, RedisClusterException)

AsyncClient = aioredis.Redis | AsyncRedisCluster
SyncClient = redis.Redis | redis.RedisCluster

MAX_CONNECTIONS = 64
# A command may wait this long for a connection, then its own timeout: well
# inside Envoy's ext_proc message timeout (2 s in envoy/), so that a burst
# against a slow Redis gets the gateway's own 503, not Envoy's.
POOL_WAIT_S = 1.0
MAX_CLUSTER_CONNECTIONS = 10_000
MAX_REASON_CHARS = 200  # of an error reply quoted in a log line
# A managed Redis fails over by pointing its endpoint at the promoted
# replica; connections opened before stay with the demoted node, which
# answers every write with READONLY. Such a connection is closed and the
# command sent once more on a new one, which reaches the new primary. A
# script refused so ran no write (a replica takes none), so this is safe;
# timeouts and lost connections are never retried (a reservation may stand).
FAILOVER_ERRORS: tuple[type[Exception], ...] = (ReadOnlyError,)


def async_client(
    url: str, *, cluster: bool = False, timeout_ms: int = 250
) -> AsyncClient:
    """An asyncio client of ``url``; a cluster client when ``cluster``.

    ``url`` names any one node of a cluster; the client discovers the rest.
    Raises ``ConfigError`` for a URL redis-py cannot use (Sentinel's, say).
    """
    timeout_s = timeout_ms / 1000
    with _url_errors(url):
        return _async_client(url, cluster, timeout_s)


def _async_client(url: str, cluster: bool, timeout_s: float) -> AsyncClient:
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
        retry=AsyncRetry(NoBackoff(), 1, supported_errors=FAILOVER_ERRORS),
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
    raises ``StoreUnavailable`` here when no node answers; ``ConfigError``
    for a URL redis-py cannot use.
    """
    timeout_s = timeout_ms / 1000
    with _url_errors(url):
        return _sync_client(url, cluster, timeout_s)


def _sync_client(url: str, cluster: bool, timeout_s: float) -> SyncClient:
    if cluster:
        with store_errors("reading the cluster's slots"):
            return redis.RedisCluster.from_url(
                url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
            )
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1, supported_errors=FAILOVER_ERRORS),
    )


# Error replies that speak of the server's state, not of the command: any
# other command would get the same answer until the state passes (a failover
# demoted the node, memory is full, a snapshot fails, a script runs long, the
# dataset loads, the credentials or the user's permissions are wrong).
STORE_STATE_CODES = frozenset(
    {
        "READONLY",
        "OOM",
        "MISCONF",
        "BUSY",
        "LOADING",
        "MASTERDOWN",
        "NOREPLICAS",
        "CLUSTERDOWN",
        "TRYAGAIN",
        "NOAUTH",
        "WRONGPASS",
        "NOPERM",
    }
)


@contextmanager
def _url_errors(url: str) -> Iterator[None]:
    """Turn redis-py's ``ValueError`` for an unusable URL into ``ConfigError``."""
    try:
        yield
    except ValueError as exc:
        raise ConfigError(
            f"TOLLGATE_REDIS_URL {redacted_url(url)} cannot be used: {exc} "
            "(Sentinel URLs are not supported: name the primary's endpoint)"
        ) from exc


def redacted_url(url: str) -> str:
    """``url`` fit for a message or log line: its password (in the user
    part or a ``password`` query argument) reads ``***``."""
    parts = urlsplit(url)
    if parts.password is None and "password" not in parts.query.lower():
        return url  # as written: urlunsplit would drop unix:// to unix:
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    query = "&".join(
        f"{name}=***" if "password" in name.lower() else f"{name}={value}"
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def answered_with_error(exc: StoreUnavailable) -> bool:
    """True when Redis answered this command with an error of its own (a
    script that failed on this input, say): other work may still succeed,
    retrying this one alone will not help soon. False when Redis did not
    answer, or answered with its state (``STORE_STATE_CODES``), which fails
    every command alike."""
    cause = exc.__cause__
    if not isinstance(cause, ResponseError):
        return False
    return _status_code(cause) not in STORE_STATE_CODES


def _status_code(exc: Exception) -> str:
    """The error reply's first word (``READONLY``, ``OOM``), or ''."""
    code = getattr(exc, "status_code", None)
    if code:
        return str(code)
    words = str(exc).split(" ", 1)
    return words[0] if words[0].isupper() else ""


def _is_reply(exc: Exception) -> bool:
    """Whether ``exc`` is an error reply of Redis (``LOADING`` and
    ``WRONGPASS`` come as connection errors, with their code)."""
    return isinstance(exc, ResponseError) or bool(getattr(exc, "status_code", None))


def _reason(exc: Exception) -> str:
    """How a Redis error reads in a log line: an error reply's own words
    (never a credential: Redis does not repeat them), else the error's type
    (a connection error's text may name the URL)."""
    if not _is_reply(exc):
        return type(exc).__name__
    code = _status_code(exc)
    text = str(exc)
    reply = text if text.startswith(code) else f"{code} {text}".strip()
    return reply[:MAX_REASON_CHARS]


@contextmanager
def store_errors(doing: str) -> Iterator[None]:
    """Translate a Redis error raised in the block into ``StoreUnavailable``.

    ``doing`` completes the sentence "redis did not answer while ...".
    """
    try:
        yield
    except STORE_ERRORS as exc:
        answered = _is_reply(exc)
        raise StoreUnavailable(
            f"redis {'refused' if answered else 'did not answer'} while "
            f"{doing}: {_reason(exc)}",
            maybe_applied=isinstance(exc, RedisTimeoutError),
        ) from exc
