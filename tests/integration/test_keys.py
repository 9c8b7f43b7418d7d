"""Gateway keys against a real redis-server: issue, identify, revoke, expire."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio as aioredis

from extproc.keys import (
    KEY_ID_CHARS,
    KeyRing,
    find_key,
    issue_key,
    key_digest,
    keys_hash,
    list_keys,
    looks_like_key,
    revoke_key,
)
from extproc.local import RedisProcess

NOW_MS = 1_800_000_000_000
DAY_MS = 86_400_000


class Clock:
    def __init__(self, now_ms: int = NOW_MS) -> None:
        self.now_s = now_ms / 1000

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def admin(redis_server: RedisProcess) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


@pytest.fixture
async def client(redis_server: RedisProcess) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def test_issued_key_identifies_its_identity_and_tool(
    admin, client, tenant
) -> None:
    key, issued = issue_key(admin, tenant, "alice", "claude-code", now_ms=NOW_MS)

    record = await KeyRing(client, tenant, clock=Clock()).identify(key)

    assert looks_like_key(key)
    assert (issued, "alice", "claude-code") == (record, record.identity, record.tool)


async def test_only_the_digest_is_stored_never_the_key(admin, tenant) -> None:
    key, record = issue_key(admin, tenant, "alice", now_ms=NOW_MS)

    stored = b""
    for name in admin.scan_iter(match=f"tg:{{{tenant}}}:*"):
        stored += name + b"\n"
        for field, value in admin.hgetall(name).items():
            stored += field + b"=" + value + b"\n"

    assert key.encode() not in stored
    assert key.encode()[4:] not in stored
    assert [key_digest(key).encode()] == admin.hkeys(keys_hash(tenant))
    assert key_digest(key)[:KEY_ID_CHARS] == record.key_id


async def test_key_of_another_tenant_identifies_no_one(admin, client, tenant) -> None:
    key, _ = issue_key(admin, tenant, "alice", now_ms=NOW_MS)

    assert None is await KeyRing(client, tenant + "-other", clock=Clock()).identify(key)


async def test_revoked_key_identifies_no_one(admin, client, tenant) -> None:
    key, record = issue_key(admin, tenant, "alice", now_ms=NOW_MS)

    revoked = revoke_key(admin, tenant, record.key_id, now_ms=NOW_MS + 5)

    assert revoked is True
    assert None is await KeyRing(client, tenant, clock=Clock()).identify(key)
    assert NOW_MS + 5 == find_key(admin, tenant, record.key_id).revoked_ms


async def test_revocation_reaches_a_running_ring_within_its_cache_interval(
    admin,
    client,
    tenant,
) -> None:
    key, record = issue_key(admin, tenant, "alice", now_ms=NOW_MS)
    clock = Clock()
    ring = KeyRing(client, tenant, cache_ttl_s=5.0, clock=clock)
    await ring.identify(key)

    revoke_key(admin, tenant, record.key_id, now_ms=NOW_MS)
    clock.now_s += 4
    cached = await ring.identify(key)
    clock.now_s += 1
    after = await ring.identify(key)

    assert (record, None) == (cached, after)


def test_revoking_twice_keeps_the_first_time(admin, tenant) -> None:
    _, record = issue_key(admin, tenant, "alice", now_ms=NOW_MS)

    first = revoke_key(admin, tenant, record.key_id, now_ms=NOW_MS + 1)
    second = revoke_key(admin, tenant, record.key_id, now_ms=NOW_MS + 2)

    assert (True, True) == (first, second)
    assert NOW_MS + 1 == find_key(admin, tenant, record.key_id).revoked_ms


def test_revoking_an_unknown_id_is_false(admin, tenant) -> None:
    assert revoke_key(admin, tenant, "0123456789ab") is False


def test_revoking_a_malformed_id_is_a_value_error(admin, tenant) -> None:
    with pytest.raises(ValueError):
        revoke_key(admin, tenant, "tgk_not_an_id")


async def test_key_expires_at_its_lifetime(admin, client, tenant) -> None:
    key, record = issue_key(admin, tenant, "alice", expires_in_ms=DAY_MS, now_ms=NOW_MS)
    clock = Clock(NOW_MS + DAY_MS - 1)
    ring = KeyRing(client, tenant, clock=clock)

    before = await ring.identify(key)
    clock.now_s = (NOW_MS + DAY_MS) / 1000
    after = await ring.identify(key)

    assert (NOW_MS + DAY_MS, record, None) == (record.expires_ms, before, after)


def test_listing_shows_every_record_oldest_first_and_no_key(admin, tenant) -> None:
    first_key, first = issue_key(admin, tenant, "alice", now_ms=NOW_MS)
    _, second = issue_key(admin, tenant, "bob", "codex", now_ms=NOW_MS + 1)
    revoke_key(admin, tenant, first.key_id, now_ms=NOW_MS + 2)

    records = list_keys(admin, tenant)

    assert [first.key_id, second.key_id] == [r.key_id for r in records]
    assert ["revoked", "active"] == [r.status(NOW_MS + 3) for r in records]
    assert first_key not in repr(records)


@pytest.mark.parametrize(
    "identity, tool, lifetime_ms",
    [
        ("", None, None),
        (" ", None, None),
        ("a" * 257, None, None),
        ("alice", "bad tool", None),
        ("alice", None, 0),
        ("alice", None, -5),
    ],
)
def test_invalid_issue_is_a_value_error_and_stores_nothing(
    admin,
    tenant,
    identity,
    tool,
    lifetime_ms,
) -> None:
    with pytest.raises(ValueError):
        issue_key(admin, tenant, identity, tool, expires_in_ms=lifetime_ms)

    assert 0 == admin.hlen(keys_hash(tenant))


def test_tool_names_are_kept_in_lower_case(admin, tenant) -> None:
    _, record = issue_key(admin, tenant, "alice", "Claude-Code")

    assert "claude-code" == record.tool
