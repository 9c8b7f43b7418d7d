"""Policy reload, key rotation and cut streams, through the running gateway."""

from __future__ import annotations

import http.client
import json
import time

import pytest

from tests.e2e.harness import (
    CUT_HEADER,
    DELAY_HEADER,
    HANG_UP_HEADER,
    HOLD_HEADER,
    LINGER_HEADER,
    REPLAY_HEADER,
    post_and_hang_up_unanswered,
    read_until_and_hang_up,
)

pytestmark = pytest.mark.e2e

CHAT = "/openai/v1/chat/completions"
BODY = {
    "model": "gpt-4o-mini",
    "max_tokens": 50,
    "messages": [{"role": "user", "content": "hi"}],
}
FIXTURE = "openai_chat_nonstream_docs_default"
STREAM_BODY = {**BODY, "stream": True}


def _eventually(check, timeout_s: float = 10.0):
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def test_policy_change_takes_effect_without_restart(gateway, identity) -> None:
    original = gateway.policy_path.read_text()
    limited = original.replace(
        "users:\n",
        f'users:\n  {identity}:\n    budget: {{capacity_usd: "0.000001"}}\n',
    )
    headers = {"x-tollgate-identity": identity, REPLAY_HEADER: FIXTURE}
    try:
        gateway.policy_path.write_text(limited)

        refused = _eventually(
            lambda: gateway.client.post(CHAT, BODY, headers).status == 429
        )
    finally:
        gateway.policy_path.write_text(original)

    assert refused
    assert _eventually(lambda: gateway.client.post(CHAT, BODY, headers).status == 200)


def test_invalid_policy_is_refused_and_the_old_one_keeps_serving(
    gateway, identity
) -> None:
    original = gateway.policy_path.read_text()
    headers = {"x-tollgate-identity": identity, REPLAY_HEADER: FIXTURE}
    try:
        gateway.policy_path.write_text(original.replace("providers:", "providerz:"))
        time.sleep(1.0)

        status = gateway.client.post(CHAT, BODY, headers).status
    finally:
        gateway.policy_path.write_text(original)

    assert 200 == status
    assert "policy reload refused" in gateway.extproc.log_path.read_text()


def test_rotated_key_file_is_used_without_restart(gateway, identity) -> None:
    key_file = gateway.policy_path.parent / "anthropic.key"
    original = key_file.read_text()
    rotated = "sk-ant-rotated-" + identity
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 20,
        "messages": [{"role": "user", "content": "hi"}],
    }
    headers = {
        "x-tollgate-identity": identity,
        REPLAY_HEADER: "anthropic_messages_nonstream_cache",
    }
    try:
        key_file.write_text(rotated)

        def upstream_saw_rotated() -> bool:
            gateway.client.post("/anthropic/v1/messages", body, headers)
            return gateway.standin.requests[-1].headers.get("x-api-key") == rotated

        assert _eventually(upstream_saw_rotated)
    finally:
        key_file.write_text(original)


def test_client_hanging_up_mid_stream_is_settled_once_with_an_estimate(
    gateway, identity
) -> None:
    body = {
        "model": "claude-sonnet-4-20250514",
        "max_tokens": 300,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    headers = {
        "x-tollgate-identity": identity,
        DELAY_HEADER: "200",
        REPLAY_HEADER: "anthropic_messages_stream_sdk_tool_use",
    }

    head, first = gateway.client.post_and_hang_up(
        "/anthropic/v1/messages", body, headers, after_bytes=64
    )

    settlement = gateway.ledger.settlement(head["x-tollgate-request-id"], timeout_s=20)
    assert first
    assert "estimated_cut" == settlement["outcome"]
    assert settlement["cost_micro_usd"] > 0
    time.sleep(0.5)
    assert 1 == len(gateway.ledger.entries(head["x-tollgate-request-id"]))


def test_access_log_of_a_cut_stream_names_its_request_and_caller(
    gateway, identity
) -> None:
    body = {"model": "claude-sonnet-4-20250514", "max_tokens": 300, "stream": True}
    headers = {
        "x-tollgate-identity": identity,
        DELAY_HEADER: "200",
        REPLAY_HEADER: "anthropic_messages_stream_sdk_tool_use",
    }

    head, _ = gateway.client.post_and_hang_up(
        "/anthropic/v1/messages", {**body, "messages": []}, headers, after_bytes=64
    )
    request_id = head["x-tollgate-request-id"]

    def logged() -> list[dict]:
        lines = gateway.envoy.access_log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if request_id in line]

    entries = _eventually(logged)
    assert entries, "no access log line names the cut stream's request id"
    assert (identity, "allowed") == (entries[0]["identity"], entries[0]["decision"])


def test_access_log_of_a_call_cut_before_its_answer_joins_its_charge(
    gateway, identity
) -> None:
    body = {**STREAM_BODY, "messages": [{"role": "user", "content": identity}]}
    headers = {
        "x-tollgate-identity": identity,
        REPLAY_HEADER: "openai_chat_stream_include_usage",
        HOLD_HEADER: "3000",
    }

    post_and_hang_up_unanswered(
        gateway.client.port,
        CHAT,
        body,
        headers,
        once=lambda: _upstream_has(gateway, identity),
    )

    charge = _eventually(lambda: _charge_of(gateway, identity))
    assert charge, "the call cut before its answer was not charged"
    line = _access_log_line(gateway, charge["request_id"])
    assert ("estimated_no_response", identity, "allowed") == (
        charge["outcome"],
        line["identity"],
        line["decision"],
    )


def _upstream_has(gateway, marker: str) -> bool:
    return any(marker.encode() in r.body for r in gateway.standin.requests)


def _charge_of(gateway, identity: str) -> dict | None:
    """The one ledger entry booked to ``identity``, if it has landed."""
    rows = gateway.ledger.client.xrange(gateway.ledger.prefix + "ledger")
    for _, fields in rows:
        entry = {k.decode(): v.decode() for k, v in fields.items()}
        if json.loads(entry["detail"])["identity"] == identity:
            return entry
    return None


def test_access_log_carries_the_cost(gateway, identity) -> None:
    response = gateway.client.post(
        CHAT, BODY, {"x-tollgate-identity": identity, REPLAY_HEADER: FIXTURE}
    )
    request_id = response.headers["x-tollgate-request-id"]
    cost = gateway.ledger.settlement(request_id)["cost_micro_usd"]

    def logged() -> list[dict]:
        lines = gateway.envoy.access_log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if request_id in line]

    entries = _eventually(logged)
    assert entries, "no access log line for the request"
    assert str(cost) == str(entries[0]["cost_micro_usd"])


def test_upstream_reset_mid_body_is_settled_once_with_an_estimate(
    gateway, identity
) -> None:
    name = "anthropic_messages_stream_sdk_tool_use"
    body = {
        "model": "claude-sonnet-4-20250514",
        "max_tokens": 300,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    headers = {"x-tollgate-identity": identity, REPLAY_HEADER: name, CUT_HEADER: "1500"}

    connection = http.client.HTTPConnection(
        "127.0.0.1", gateway.client.port, timeout=30
    )
    connection.request(
        "POST",
        "/anthropic/v1/messages",
        json.dumps(body).encode(),
        {"content-type": "application/json", **headers},
    )
    reply = connection.getresponse()
    request_id = reply.getheader("x-tollgate-request-id")
    with pytest.raises(http.client.IncompleteRead):
        reply.read()  # Envoy passes the upstream's reset on to the client
    connection.close()

    settlement = gateway.ledger.settlement(request_id, timeout_s=20)
    assert "estimated_cut" == settlement["outcome"]
    assert settlement["cost_micro_usd"] > 0
    assert 377 == settlement["detail"]["usage"]["input_tokens"]  # from message_start
    time.sleep(0.5)
    assert 1 == len(gateway.ledger.entries(request_id))


def _settlements_of(gateway, identity: str) -> list[dict]:
    rows = gateway.ledger.client.xrange(gateway.ledger.prefix + "ledger")
    entries = [{k.decode(): v.decode() for k, v in f.items()} for _, f in rows]
    return [e for e in entries if json.loads(e["detail"])["identity"] == identity]


def test_upstream_reset_mid_json_answer_is_charged_the_output_cap(
    gateway, identity
) -> None:
    """A non-streamed answer is generated (and billed) whole before its first
    byte: losing its body loses the usage, not the output."""
    headers = {
        "x-tollgate-identity": identity,
        REPLAY_HEADER: FIXTURE,
        CUT_HEADER: "300",
    }

    reply = gateway.client.post(CHAT, BODY, headers)

    assert reply.status >= 500  # Envoy's own answer: the upstream reset
    settled = _eventually(lambda: _settlements_of(gateway, identity), timeout_s=20)
    time.sleep(0.5)
    assert 1 == len(_settlements_of(gateway, identity))
    assert "estimated_cut" == settled[0]["outcome"]
    usage = json.loads(settled[0]["detail"])["usage"]
    assert BODY["max_tokens"] == usage["output_tokens"]


def test_upstream_gone_after_taking_the_request_is_charged_as_unanswered(
    gateway, identity
) -> None:
    """Envoy's own 503 for a provider that dropped the connection after the
    request went out is no provider refusal: the call may have been billed."""
    headers = {
        "x-tollgate-identity": identity,
        REPLAY_HEADER: FIXTURE,
        HANG_UP_HEADER: "1",
    }

    reply = gateway.client.post(CHAT, BODY, headers)

    assert 503 == reply.status
    settlement = gateway.ledger.settlement(reply.headers["x-tollgate-request-id"])
    assert "estimated_no_response" == settlement["outcome"]
    assert BODY["max_tokens"] == settlement["detail"]["usage"]["output_tokens"]
    time.sleep(0.5)
    assert 1 == len(_settlements_of(gateway, identity))


def _access_log_line(gateway, request_id: str) -> dict:
    def logged() -> list[dict]:
        lines = gateway.envoy.access_log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if request_id in line]

    entries = _eventually(logged)
    assert entries, f"no access log line names the request {request_id}"
    return entries[0]


def _hang_up_after_done(gateway, identity: str) -> tuple[dict[str, str], bytes]:
    """An OpenAI stream whose server ends the body a second after ``[DONE]``;
    the client hangs up as soon as ``[DONE]`` has arrived, as the SDKs do."""
    body = {**STREAM_BODY, "stream_options": {"include_usage": True}}
    headers = {
        "x-tollgate-identity": identity,
        REPLAY_HEADER: "openai_chat_stream_include_usage",
        LINGER_HEADER: "1000",
    }
    return read_until_and_hang_up(
        gateway.client.port, CHAT, body, headers, b"data: [DONE]"
    )


def test_client_gone_right_after_done_is_metered(gateway, identity) -> None:
    head, data = _hang_up_after_done(gateway, identity)

    settlement = gateway.ledger.settlement(head["x-tollgate-request-id"], timeout_s=20)
    assert b"data: [DONE]" in data
    assert ("metered", 78, 9) == (
        settlement["outcome"],
        settlement["detail"]["usage"]["input_tokens"],
        settlement["detail"]["usage"]["output_tokens"],
    )


def test_access_log_of_a_client_gone_after_done_carries_the_cost(
    gateway, identity
) -> None:
    head, _ = _hang_up_after_done(gateway, identity)
    request_id = head["x-tollgate-request-id"]

    cost = gateway.ledger.settlement(request_id, timeout_s=20)["cost_micro_usd"]
    line = _access_log_line(gateway, request_id)
    assert (str(cost), "metered") == (line["cost_micro_usd"], line["outcome"])
