"""Faults with real processes: the ext_proc server killed or restarted
mid-stream, a client gone while Redis is slow to answer."""

from __future__ import annotations

import http.client
import json
import secrets
import socket
import threading
import time

import pytest

from tests.e2e.conftest import running_gateway
from tests.e2e.harness import DELAY_HEADER, REPLAY_HEADER, SlowReplies

pytestmark = pytest.mark.e2e

STREAM = "anthropic_messages_stream_sdk_tool_use"
BODY = {
    "model": "claude-sonnet-4-20250514",
    "max_tokens": 300,
    "stream": True,
    "messages": [{"role": "user", "content": "hi"}],
}


def _stream_in_background(gateway, identity: str, delay_ms: int) -> threading.Thread:
    def run() -> None:
        try:
            gateway.client.post(
                "/anthropic/v1/messages",
                BODY,
                {
                    "x-tollgate-identity": identity,
                    REPLAY_HEADER: STREAM,
                    DELAY_HEADER: str(delay_ms),
                },
                timeout_s=60,
            )
        except (OSError, http.client.HTTPException):
            pass  # the gateway may reset the stream; the ledger is what counts

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _wait_for(check, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def _entries(gateway) -> list[dict[str, str]]:
    rows = gateway.ledger.client.xrange(gateway.ledger.prefix + "ledger")
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in rows]


def _held(gateway) -> list[str]:
    members = gateway.ledger.client.zrange(gateway.ledger.prefix + "leases", 0, -1)
    return [m.decode() for m in members]


FAST_LEASES = {
    "lease_ms": "1500",
    "lease_sweep_ms": "200",
    "lease_sweep_grace_ms": "300",
    "grace_period_s": "20",
}


@pytest.fixture
def fault_gateway(redis_server, tmp_path):
    tenant = "faults-" + secrets.token_hex(4)
    with running_gateway(
        tmp_path, redis_server, tenant=tenant, settings=FAST_LEASES
    ) as gw:
        yield gw


@pytest.fixture
def slow_redis_gateway(redis_server, tmp_path):
    """A gateway whose ext_proc server reaches Redis through ``SlowReplies``."""
    tenant = "slow-" + secrets.token_hex(4)
    with SlowReplies(redis_server.port) as relay:
        settings = {**FAST_LEASES, "redis_url": relay.url}
        with running_gateway(
            tmp_path, redis_server, tenant=tenant, settings=settings
        ) as gw:
            yield gw, relay


def _send_and_hang_up(port: int, identity: str, after_s: float) -> None:
    """Send a whole request, then drop the socket ``after_s`` later, before
    any answer."""
    body = json.dumps({**BODY, "stream": False}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /anthropic/v1/messages HTTP/1.1\r\nhost: gateway\r\n"
            b"content-type: application/json\r\n"
            + f"x-tollgate-identity: {identity}\r\n".encode()
            + f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        time.sleep(after_s)
        sock.shutdown(socket.SHUT_RDWR)


def test_killed_server_leaves_one_charge_at_the_estimate(fault_gateway) -> None:
    gateway = fault_gateway
    thread = _stream_in_background(gateway, "victim", delay_ms=300)
    request_id = _wait_for(lambda: _held(gateway), 10)[0]
    estimate = int(
        gateway.ledger.client.hget(
            gateway.ledger.prefix + f"resv:{request_id}", "estimate"
        )
    )

    gateway.extproc.kill()
    gateway.extproc.start()

    entries = _wait_for(lambda: _entries(gateway), 10)
    thread.join(30)
    time.sleep(0.5)
    entries = _entries(gateway)
    assert [("lease_expired", str(estimate))] == [
        (e["outcome"], e["cost_micro_usd"]) for e in entries
    ]
    assert request_id == entries[0]["request_id"]


def test_graceful_restart_mid_stream_settles_once_with_the_usage_seen(
    fault_gateway,
) -> None:
    gateway = fault_gateway
    thread = _stream_in_background(gateway, "patient", delay_ms=150)
    _wait_for(lambda: _held(gateway), 10)

    gateway.extproc.stop()
    gateway.extproc.start()

    thread.join(30)
    entries = _wait_for(lambda: _entries(gateway), 10)
    time.sleep(2.0)  # past the lease: a second charge would show now
    entries = _entries(gateway)
    assert 1 == len(entries)
    assert entries[0]["outcome"] == "metered"


def test_client_gone_while_its_reservation_is_in_flight_is_charged_nothing(
    slow_redis_gateway,
) -> None:
    gateway, relay = slow_redis_gateway
    _stream_in_background(gateway, "warm", delay_ms=0).join(30)  # scripts loaded
    _wait_for(lambda: _entries(gateway), 10)
    reached_before = len(gateway.standin.requests)
    relay.delay_s = 0.15  # Redis holds the estimate at once; the reply waits

    _send_and_hang_up(gateway.client.port, "impatient", after_s=0.06)
    time.sleep(4.0)  # past the lease and its sweep: a hold left behind is charged
    relay.delay_s = 0.0

    charged = [json.loads(e["detail"])["identity"] for e in _entries(gateway)]
    assert (["warm"], [], 0) == (
        charged,
        _held(gateway),
        len(gateway.standin.requests) - reached_before,
    )


def test_access_log_of_a_client_gone_while_it_was_admitted_says_pending(
    slow_redis_gateway,
) -> None:
    gateway, relay = slow_redis_gateway
    _stream_in_background(gateway, "warm", delay_ms=0).join(30)  # scripts loaded
    relay.delay_s = 0.15  # the decision reaches Envoy after the client left

    _send_and_hang_up(gateway.client.port, "hasty", after_s=0.06)

    line = _wait_for(lambda: _access_log_line_of(gateway, "hasty"), 10)
    relay.delay_s = 0.0
    assert ("pending", True) == (line["decision"], bool(line["tollgate_request_id"]))


def _access_log_line_of(gateway, identity: str) -> dict | None:
    path = gateway.envoy.access_log_path
    for line in path.read_text().splitlines() if path.exists() else []:
        record = json.loads(line)
        if record.get("identity") == identity:
            return record
    return None


def test_refusal_after_a_late_reservation_reply_is_charged_nothing(
    slow_redis_gateway,
) -> None:
    gateway, relay = slow_redis_gateway
    _stream_in_background(gateway, "warm", delay_ms=0).join(30)  # scripts loaded
    _wait_for(lambda: _entries(gateway), 10)
    relay.delay_s = 0.4  # past the store timeout: the hold is made, its reply late

    response = gateway.client.post(
        "/anthropic/v1/messages",
        {**BODY, "stream": False},
        {"x-tollgate-identity": "unlucky"},
    )
    relay.delay_s = 0.0
    time.sleep(4.0)  # past the lease and its sweep: a hold left behind is charged

    charged = sum(
        int(e["cost_micro_usd"])
        for e in _entries(gateway)
        if json.loads(e["detail"])["identity"] == "unlucky"
    )
    assert (503, 0, []) == (response.status, charged, _held(gateway))


def test_admitted_call_after_a_late_reservation_reply_is_held_only_once(
    redis_server, tmp_path
) -> None:
    tenant = "admit-" + secrets.token_hex(4)
    with SlowReplies(redis_server.port) as relay, running_gateway(
        tmp_path,
        redis_server,
        tenant=tenant,
        settings={**FAST_LEASES, "redis_url": relay.url},
        policy_extra="store_failure: admit\n",
    ) as gateway:
        _stream_in_background(gateway, "warm", delay_ms=0).join(30)  # scripts
        _wait_for(lambda: _entries(gateway), 10)
        relay.delay_s = 0.4  # past the store timeout: admitted, yet held

        response = gateway.client.post(
            "/anthropic/v1/messages",
            {**BODY, "stream": False},
            {
                "x-tollgate-identity": "lucky",
                REPLAY_HEADER: "anthropic_messages_nonstream_cache",
            },
        )
        relay.delay_s = 0.0
        request_id = response.headers["x-tollgate-request-id"]
        cost = gateway.ledger.settlement(request_id)["cost_micro_usd"]
        time.sleep(2.0)  # past the lease: a hold left standing would show

        # Usually the late reservation ran in Redis and sized the bucket; it
        # must then be replaced by the direct charge, not kept beside it.
        # When the reservation needed a new connection, the connection's own
        # handshake replies were the late ones and the script was never
        # sent: the bucket then holds the bare charge until the next
        # reservation sizes it. Either way one charge and no hold stand.
        sized = gateway.ledger.client.hexists(
            gateway.ledger.prefix + "bucket:user:lucky", "cap"
        )
        capacity = 1000 * 1_000_000 if sized else 0
        assert (200, capacity - cost, []) == (
            response.status,
            gateway.ledger.level("user:lucky"),
            _held(gateway),
        )
