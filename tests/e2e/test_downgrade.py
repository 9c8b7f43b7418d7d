"""Past a soft limit, or instead of a refusal, a cheaper model is asked for."""

from __future__ import annotations

import json
import time

import pytest

from tests.e2e.harness import REPLAY_HEADER

pytestmark = pytest.mark.e2e

CHAT = "/openai/v1/chat/completions"
BODY = {
    "model": "gpt-4o",
    "max_tokens": 50,
    "messages": [{"role": "user", "content": "hi"}],
}
FIXTURE = "openai_chat_stream_include_usage"


def _leave(gateway, scope: str, level: int, capacity: int) -> None:
    gateway.ledger.client.hset(
        gateway.ledger.prefix + f"bucket:{scope}",
        mapping={
            "level": level,
            "ts": int(time.time() * 1000),
            "cap": capacity,
            "period": "",
        },
    )


def test_budget_that_would_refuse_switches_to_the_cheaper_model(gateway) -> None:
    _leave(gateway, "user:thrifty", level=100, capacity=1000)

    response = gateway.client.post(
        CHAT, BODY, {"x-tollgate-identity": "thrifty", REPLAY_HEADER: FIXTURE}
    )

    assert 200 == response.status
    sent = gateway.standin.requests[-1]
    assert "gpt-4o-mini" == json.loads(sent.body)["model"]
    assert str(len(sent.body)) == sent.headers["content-length"]


def test_spend_past_the_threshold_switches_to_the_cheaper_model(gateway) -> None:
    _leave(gateway, "user:thrifty-soft", level=400_000, capacity=1_000_000)

    response = gateway.client.post(
        CHAT, BODY, {"x-tollgate-identity": "thrifty-soft", REPLAY_HEADER: FIXTURE}
    )

    assert 200 == response.status
    assert "gpt-4o-mini" == json.loads(gateway.standin.requests[-1].body)["model"]


def test_spend_below_the_threshold_keeps_the_model_asked_for(gateway) -> None:
    _leave(gateway, "user:thrifty-soft", level=900_000, capacity=1_000_000)

    gateway.client.post(
        CHAT, BODY, {"x-tollgate-identity": "thrifty-soft", REPLAY_HEADER: FIXTURE}
    )

    assert "gpt-4o" == json.loads(gateway.standin.requests[-1].body)["model"]
