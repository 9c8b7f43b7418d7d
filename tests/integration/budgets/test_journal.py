"""The local journal of settlements against a real redis-server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from extproc.budgets.journal import Journal
from extproc.budgets.store import Attribution, BucketSpec, BudgetStore, Settlement
from extproc.local import RedisProcess

ALICE = Attribution("alice", "openai", "gpt-4o")
BUDGET = BucketSpec("user:alice", 1_000_000)


@pytest.fixture
async def store(redis_server) -> AsyncIterator[BudgetStore]:
    client = aioredis.from_url(redis_server.url)
    yield BudgetStore(client, f"t-{uuid.uuid4().hex[:8]}", lease_ms=60_000)
    await client.aclose()


def _settlement(request_id: str, cost: int) -> Settlement:
    return Settlement(request_id, cost, 10, 5, False, "metered", {})


async def _booked(store: BudgetStore) -> list[str]:
    entries = await store._redis.xrange(store.keys.ledger)
    return [fields[b"request_id"].decode() for _, fields in entries]


async def test_settlement_after_a_torn_last_line_is_replayed(
    store, tmp_path: Path
) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_text('{"settlement": {"request_id": "torn", "cost_mic')
    journal = Journal(path, max_bytes=1 << 20)

    await journal.append(_settlement("r1", 300), [BUDGET], ALICE, reserved=False)
    await journal.replay(lambda: store)

    assert ["r1"] == await _booked(store)
    assert 0 == journal.depth


async def test_a_record_redis_refuses_is_kept_and_does_not_block_the_rest(
    store, tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "journal.jsonl", max_bytes=1 << 20)
    unstorable = _settlement("too-big", 10**20)  # not an integer to Lua
    await journal.append(unstorable, [BUDGET], ALICE, reserved=False)
    await journal.append(_settlement("fine", 300), [BUDGET], ALICE, reserved=False)

    replayed = await journal.replay(lambda: store)

    assert (["fine"], 1, 1) == (await _booked(store), replayed, journal.depth)
    journal.close()


async def test_a_full_redis_stops_the_replay_at_its_first_record(
    tmp_path: Path, caplog
) -> None:
    # OOM (maxmemory reached, noeviction) refuses every write alike: the
    # replay waits for the next round instead of trying each record and
    # logging each as refused.
    with RedisProcess(workdir=tmp_path / "redis") as redis:
        client = aioredis.from_url(redis.url)
        store = BudgetStore(client, "full", lease_ms=60_000)
        journal = Journal(tmp_path / "journal.jsonl", max_bytes=1 << 20)
        for n in range(3):
            await journal.append(
                _settlement(f"r{n}", 1), [BUDGET], ALICE, reserved=False
            )
        await client.config_set("maxmemory", 1)

        replayed = await journal.replay(lambda: store)

        assert (0, 3) == (replayed, journal.depth)
        assert "refused by redis" not in caplog.text
        journal.close()
        await client.aclose()
