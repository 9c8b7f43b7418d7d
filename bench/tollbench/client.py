"""A minimal HTTP/1.1 client that times the first byte of a response body.

Standard library clients read the head and the body in steps of their own,
which hides when the first body byte actually arrived. This one keeps a
connection alive, sends one request at a time and notes the moment the
``recv`` that brought the first body byte returned.
"""

from __future__ import annotations

import socket
import statistics
import time
from dataclasses import dataclass
from typing import Self

RECV_BYTES = 65536


@dataclass(frozen=True)
class Exchange:
    status: int
    headers: dict[str, str]
    body: bytes
    first_byte_s: float
    """From the start of sending to the first body byte."""
    total_s: float


class Connection:
    """One keep-alive connection to 127.0.0.1:``port``."""

    def __init__(self, port: int, *, timeout_s: float = 10.0) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = bytearray()
        self._in_body = False
        self._first_byte_at: float | None = None
        self._last_recv_at = 0.0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def post(self, path: str, headers: dict[str, str], body: bytes) -> Exchange:
        """Send one POST and read the whole answer (content-length or chunked)."""
        lines = [f"POST {path} HTTP/1.1", "host: bench.local"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append(f"content-length: {len(body)}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        self._first_byte_at = None
        self._in_body = False

        started = time.perf_counter()
        self._sock.sendall(request)
        status, response_headers = self._read_head()
        if response_headers.get("transfer-encoding", "").lower() == "chunked":
            response_body = self._read_chunked()
        else:
            response_body = self._read_exactly(
                int(response_headers.get("content-length", "0"))
            )
        finished = time.perf_counter()

        first_byte_at = self._first_byte_at or finished
        return Exchange(
            status,
            response_headers,
            response_body,
            first_byte_at - started,
            finished - started,
        )

    def _read_head(self) -> tuple[int, dict[str, str]]:
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            self._fill()
        head = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        del self._buffer[: end + 4]
        self._in_body = True
        if self._buffer:
            # The body's first bytes came with the end of the head.
            self._first_byte_at = self._last_recv_at

        status = int(head[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()

        return status, headers

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            while (end := self._buffer.find(b"\r\n")) < 0:
                self._fill()
            size = int(bytes(self._buffer[:end]).split(b";")[0], 16)
            del self._buffer[: end + 2]
            if size == 0:
                self._read_exactly(2)  # no trailers: the final CRLF
                return b"".join(parts)
            parts.append(self._read_exactly(size))
            self._read_exactly(2)

    def _read_exactly(self, count: int) -> bytes:
        while len(self._buffer) < count:
            self._fill()
        data = bytes(self._buffer[:count])
        del self._buffer[:count]

        return data

    def _fill(self) -> None:
        data = self._sock.recv(RECV_BYTES)
        self._last_recv_at = time.perf_counter()
        if not data:
            raise ConnectionError("the server closed the connection mid-response")
        if self._in_body and self._first_byte_at is None:
            self._first_byte_at = self._last_recv_at
        self._buffer += data


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))

    return ordered[index]


def median(values: list[float]) -> float:
    return statistics.median(values)
