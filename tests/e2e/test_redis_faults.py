"""Redis killed and restarted under load, with each store-failure policy.

After each run the ledger holds exactly one entry per request that reached
the upstream, and the booked spend equals the sum of those entries.
"""

from __future__ import annotations

import secrets
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from extproc.local import RedisProcess
from tests.e2e.conftest import running_gateway
from tests.e2e.harness import DELAY_HEADER, REPLAY_HEADER

pytestmark = pytest.mark.e2e

CHAT = "/openai/v1/chat/completions"
FIXTURE = "openai_chat_stream_include_usage"
BODY = {
    "model": "gpt-4o-mini",
    "max_tokens": 50,
    "stream": True,
    "messages": [{"role": "user", "content": "hi"}],
}


def _send(gateway, identity: str) -> tuple[int, str | None]:
    response = gateway.client.post(
        CHAT,
        BODY,
        {"x-tollgate-identity": identity, REPLAY_HEADER: FIXTURE, DELAY_HEADER: "30"},
    )
    return response.status, response.headers.get("x-tollgate-request-id")


def _burst_while(gateway, action, count: int = 24) -> list[tuple[int, str | None]]:
    """``count`` requests from 6 threads, with ``action`` run mid-way."""
    with ThreadPoolExecutor(max_workers=6) as pool:
        first = [pool.submit(_send, gateway, f"u{i % 3}") for i in range(count // 2)]
        time.sleep(0.15)
        action()
        second = [pool.submit(_send, gateway, f"u{i % 3}") for i in range(count // 2)]
        return [f.result() for f in first + second]


def _ledger(gateway, timeout_s: float = 20.0, expect: int = 0) -> list[dict[str, str]]:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            rows = gateway.ledger.client.xrange(gateway.ledger.prefix + "ledger")
        except Exception:
            rows = []
        entries = [{k.decode(): v.decode() for k, v in f.items()} for _, f in rows]
        if len(entries) >= expect or time.monotonic() > deadline:
            return entries
        time.sleep(0.2)


def _booked_spend(gateway) -> int:
    total = 0
    for key in gateway.ledger.client.keys(gateway.ledger.prefix + "spend:*"):
        for field, value in gateway.ledger.client.hgetall(key).items():
            if field.endswith(b"|cost_micro_usd") and not field.startswith(b'["label"'):
                total += int(value)
    return total


@pytest.fixture
def durable_redis(tmp_path):
    with RedisProcess(workdir=tmp_path / "redis", durable=True) as redis:
        yield redis


def _gateway(tmp_path, redis, policy: str):
    settings = {"redis_timeout_ms": "200", "journal_replay_ms": "300"}
    return running_gateway(
        tmp_path / "gw",
        redis,
        tenant="rf-" + secrets.token_hex(4),
        settings=settings,
        policy_extra=f"store_failure: {policy}\n",
    )


def _restart(redis: RedisProcess, down_s: float):
    def action() -> None:
        redis.stop()
        time.sleep(down_s)
        redis.start()

    return action


def test_admit_policy_journals_through_an_outage_and_books_each_call_once(
    tmp_path, durable_redis
) -> None:
    with _gateway(tmp_path, durable_redis, "admit") as gateway:
        calls_before = len(gateway.standin.requests)

        results = _burst_while(gateway, _restart(durable_redis, 1.0))

        reached = len(gateway.standin.requests) - calls_before
        entries = _ledger(gateway, expect=reached)
        ids = [e["request_id"] for e in entries]
        assert all(status == 200 for status, _ in results)
        assert reached == len(entries) == len(set(ids))
        assert {rid for _, rid in results} == set(ids)
        assert sum(int(e["cost_micro_usd"]) for e in entries) == _booked_spend(gateway)
        assert (
            "call settled into the local journal"
            in gateway.extproc.log_path.read_text()
        )


def test_refuse_policy_answers_503_in_an_outage_and_books_what_passed(
    tmp_path, durable_redis
) -> None:
    with _gateway(tmp_path, durable_redis, "refuse") as gateway:
        calls_before = len(gateway.standin.requests)

        results = _burst_while(gateway, _restart(durable_redis, 1.0))

        reached = len(gateway.standin.requests) - calls_before
        entries = _ledger(gateway, expect=reached)
        passed = [rid for status, rid in results if status == 200]
        assert {200, 503} >= {status for status, _ in results}
        assert 503 in {status for status, _ in results}
        assert reached == len(passed) == len(entries)
        assert set(passed) == {e["request_id"] for e in entries}
        assert sum(int(e["cost_micro_usd"]) for e in entries) == _booked_spend(gateway)
