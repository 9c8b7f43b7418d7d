"""Requests Envoy cannot parse get Envoy's own answer, and Tollgate never
sees them: no ext_proc stream, nothing charged, nothing logged as an error.

Envoy answers such a request (HTTP/1.0 with 426, a malformed HTTP/1.1
request with 400) and closes the connection in the same step. An ext_proc
filter that held the answer to ask the server about it would lose it: the
client would get an empty reply.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.harness import exchange_raw

pytestmark = pytest.mark.e2e

STREAMS_STARTED = "http.tollgate.ext_proc.streams_started"
ERROR_LEVELS = ("error", "critical")

MALFORMED = {
    "del_in_header_value": (
        b"GET /openai/v1/models HTTP/1.1\r\nhost: gateway\r\n"
        b"x-tollgate-identity: {identity}\r\nx-note: a\x7fb\r\n\r\n"
    ),
    "duplicate_content_length": (
        b"POST /openai/v1/chat/completions HTTP/1.1\r\nhost: gateway\r\n"
        b"x-tollgate-identity: {identity}\r\n"
        b"content-length: 2\r\ncontent-length: 3\r\n\r\n{}"
    ),
    "non_utf8_path": (
        b"GET /openai/v1/mod\xffels HTTP/1.1\r\nhost: gateway\r\n"
        b"x-tollgate-identity: {identity}\r\n\r\n"
    ),
}


def _http_1_0(identity: str) -> bytes:
    return (
        b"GET /openai/v1/models HTTP/1.0\r\n"
        + f"x-tollgate-identity: {identity}\r\n\r\n".encode()
    )


def _malformed(name: str, identity: str) -> bytes:
    return MALFORMED[name].replace(b"{identity}", identity.encode())


def _streams_started(gateway) -> int:
    """How many ext_proc streams Envoy has opened to Tollgate so far."""
    stats = gateway.envoy.admin_get(f"/stats?filter=^{STREAMS_STARTED}$")
    return sum(int(line.split(":")[1]) for line in stats.splitlines() if line)


def _errors_logged_after(log_path: Path, offset: int) -> list[dict[str, object]]:
    """The ext_proc server's log records past ``offset`` that report an error
    or carry an exception."""
    with log_path.open("rb") as log:
        log.seek(offset)
        lines = log.read().decode(errors="replace").splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]

    return [r for r in records if r.get("level") in ERROR_LEVELS or "exception" in r]


def test_http_1_0_request_gets_envoys_426(gateway, identity) -> None:
    answer = exchange_raw(gateway.client.port, _http_1_0(identity))

    assert answer.startswith(b"HTTP/1.1 426 Upgrade Required\r\n"), answer


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_http_1_1_request_gets_envoys_400(gateway, identity, name) -> None:
    answer = exchange_raw(gateway.client.port, _malformed(name, identity))

    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer


def test_unparsable_requests_never_reach_tollgate(gateway, identity) -> None:
    streams_before = _streams_started(gateway)
    log_offset = gateway.extproc.log_path.stat().st_size

    for request in [_http_1_0(identity), *(_malformed(n, identity) for n in MALFORMED)]:
        exchange_raw(gateway.client.port, request)

    assert streams_before == _streams_started(gateway)
    assert [] == _errors_logged_after(gateway.extproc.log_path, log_offset)


def test_a_parsable_request_still_passes_through_tollgate(gateway) -> None:
    streams_before = _streams_started(gateway)

    answer = exchange_raw(
        gateway.client.port,
        b"GET /openai/v1/models HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n\r\n",
    )

    assert answer.startswith(b"HTTP/1.1 401 Unauthorized\r\n"), answer
    assert b"x-tollgate-refusal: identity_missing\r\n" in answer
    assert streams_before + 1 == _streams_started(gateway)
