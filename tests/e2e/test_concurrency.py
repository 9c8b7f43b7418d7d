"""Bursts through the whole gateway: reservations hold, budgets never overshoot."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.harness import DELAY_HEADER, REPLAY_HEADER

pytestmark = pytest.mark.e2e

CHAT = "/openai/v1/chat/completions"
POLICY_CAPACITY = 1_000_000_000  # burst-user's and team shared's 1000 USD
FIXTURE = "openai_chat_stream_include_usage"
BODY = {
    "model": "gpt-4o-mini",
    "max_tokens": 200,
    "stream": True,
    "messages": [{"role": "user", "content": "hi"}],
}


def _estimate(gateway) -> tuple[int, int]:
    """The estimate (micro-USD, tokens) the gateway holds for BODY."""
    probe = f"probe-{time.monotonic_ns()}"
    response = gateway.client.post(
        CHAT, BODY, {"x-tollgate-identity": probe, REPLAY_HEADER: FIXTURE}
    )
    detail = gateway.ledger.settlement(response.headers["x-tollgate-request-id"])[
        "detail"
    ]
    sent = json.dumps(BODY).encode()
    tokens = -(-len(sent) // 3) + BODY["max_tokens"]
    return detail["estimate_micro_usd"], tokens


def _set_level(gateway, scope: str, level: int, capacity: int) -> None:
    """Leave ``level`` in a bucket of the policy's ``capacity``, as if spent."""
    gateway.ledger.client.hset(
        gateway.ledger.prefix + f"bucket:{scope}",
        mapping={
            "level": level,
            "ts": int(time.time() * 1000),
            "cap": capacity,
            "period": "",
        },
    )


def _burst(gateway, identities: list[str]) -> list[int]:
    """All at once; each admitted stream lasts about a second, so that the
    admitted ones still hold their reservations while the rest arrive."""

    def one(identity: str) -> int:
        return gateway.client.post(
            CHAT,
            BODY,
            {
                "x-tollgate-identity": identity,
                REPLAY_HEADER: FIXTURE,
                DELAY_HEADER: "100",
            },
        ).status

    with ThreadPoolExecutor(max_workers=len(identities)) as pool:
        return list(pool.map(one, identities))


def _spent(gateway, before: int, scope: str) -> int:
    level = gateway.ledger.level(scope)
    return before - level


def _wait_until_settled(gateway, timeout_s: float = 15.0) -> None:
    """Until no reservation of the tenant is still held."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not gateway.ledger.client.zcard(gateway.ledger.prefix + "leases"):
            return
        time.sleep(0.1)


def test_fifty_at_once_from_one_identity_admit_only_what_fits(
    gateway, standin_calls
) -> None:
    estimate, _ = _estimate(gateway)
    budget = estimate * 3 + estimate // 2
    _set_level(gateway, "user:burst-user", budget, POLICY_CAPACITY)
    calls_before = standin_calls()

    statuses = _burst(gateway, ["burst-user"] * 50)

    _wait_until_settled(gateway)
    assert 3 == statuses.count(200)
    assert 47 == statuses.count(429)
    assert 3 == standin_calls() - calls_before
    assert _spent(gateway, budget, "user:burst-user") <= budget


def test_team_budget_shared_by_several_users_holds(gateway, standin_calls) -> None:
    estimate, _ = _estimate(gateway)
    budget = estimate * 3 + estimate // 2
    _set_level(gateway, "team:shared", budget, POLICY_CAPACITY)
    members = [f"team-member-{i % 3 + 1}" for i in range(50)]
    calls_before = standin_calls()

    statuses = _burst(gateway, members)

    _wait_until_settled(gateway)
    assert 3 == statuses.count(200)
    assert 3 == standin_calls() - calls_before
    assert _spent(gateway, budget, "team:shared") <= budget


def test_tokens_per_minute_limit_holds_under_a_burst(gateway, standin_calls) -> None:
    _, tokens = _estimate(gateway)
    _set_level(gateway, "user:tpm-user#tpm", tokens * 3 + tokens // 2, 1000)
    calls_before = standin_calls()

    statuses = _burst(gateway, ["tpm-user"] * 50)

    assert 3 == statuses.count(200)
    assert 3 == standin_calls() - calls_before
