"""Faults with real processes: the ext_proc server killed or restarted mid-stream."""

from __future__ import annotations

import http.client
import secrets
import threading
import time

import pytest

from tests.e2e.conftest import running_gateway
from tests.e2e.harness import DELAY_HEADER, REPLAY_HEADER

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


@pytest.fixture
def fault_gateway(redis_server, tmp_path):
    tenant = "faults-" + secrets.token_hex(4)
    settings = {
        "lease_ms": "1500",
        "lease_sweep_ms": "200",
        "lease_sweep_grace_ms": "300",
        "grace_period_s": "20",
    }
    with running_gateway(
        tmp_path, redis_server, tenant=tenant, settings=settings
    ) as gw:
        yield gw


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
