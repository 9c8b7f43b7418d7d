"""Virtual keys end to end: a coding agent configured with a gateway key."""

from __future__ import annotations

import json
import time

import pytest
import redis

from extproc.keys import issue_key, revoke_key
from tests.e2e.conftest import TENANT
from tests.e2e.harness import REPLAY_HEADER

pytestmark = pytest.mark.e2e

FIXTURE = "anthropic_messages_nonstream_cache"
BODY = {"model": "claude-sonnet-4-5", "max_tokens": 50, "messages": []}


def test_agent_with_a_gateway_key_is_identified_and_its_key_replaced(gateway) -> None:
    client = redis.Redis.from_url(gateway.redis.url)
    key, record = issue_key(client, TENANT, "key-user", tool="claude-code")

    response = gateway.client.post(
        "/anthropic/v1/messages",
        BODY,
        {"x-api-key": key, REPLAY_HEADER: FIXTURE, "user-agent": "claude-cli/2.0"},
    )

    assert 200 == response.status
    seen = gateway.standin.requests[-1].headers
    assert gateway.anthropic_key == seen["x-api-key"]
    assert key not in json.dumps(seen)
    detail = gateway.ledger.settlement(response.headers["x-tollgate-request-id"])[
        "detail"
    ]
    assert ("key-user", "claude-code") == (detail["identity"], detail["tool"])
    assert key.encode() not in _everything_in(client)


def _everything_in(client: redis.Redis) -> bytes:
    """Every key name, hash field and string value in Redis, joined."""
    parts = []
    for name in client.scan_iter():
        parts.append(name)
        kind = client.type(name)
        if kind == b"hash":
            for field, value in client.hgetall(name).items():
                parts += [field, value]
        elif kind == b"string":
            parts.append(client.get(name) or b"")
    return b"\n".join(parts)


def test_revoked_key_is_refused_within_the_cache_time(gateway) -> None:
    client = redis.Redis.from_url(gateway.redis.url)
    key, record = issue_key(client, TENANT, "revoked-user")
    assert (
        200
        == gateway.client.post(
            "/anthropic/v1/messages", BODY, {"x-api-key": key, REPLAY_HEADER: FIXTURE}
        ).status
    )

    revoke_key(client, TENANT, record.key_id, now_ms=int(time.time() * 1000))
    deadline = time.monotonic() + 8
    status = 200
    while time.monotonic() < deadline and status == 200:
        status = gateway.client.post(
            "/anthropic/v1/messages", BODY, {"x-api-key": key, REPLAY_HEADER: FIXTURE}
        ).status
        time.sleep(0.3)

    assert 401 == status


@pytest.mark.parametrize(
    "key", ["tgk_" + "A" * 40, "tgk_x", "tgk_" + "A" * 20 + "_" + "B" * 30]
)
def test_made_up_key_is_refused_even_beside_an_identity_header(
    gateway, standin_calls, key: str
) -> None:
    response = gateway.client.post(
        "/openai/v1/chat/completions",
        {"model": "gpt-4o"},
        {"authorization": f"Bearer {key}", "x-tollgate-identity": "someone-else"},
    )

    assert 401 == response.status
    assert "identity_invalid" == response.json()["error"]["code"]
    assert 0 == standin_calls()
