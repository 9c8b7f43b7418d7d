"""A fast stand-in for a provider's streamed chat completion.

Every request (HTTP/1.1, keep-alive, a ``content-length`` body) is answered
200 with ``text/event-stream``, chunked: the headers in one write, then each
event of ``payloads.stream_events()`` in a write and a chunk of its own, so
Envoy sees a stream arrive event by event the way a provider flushes it.
With ``--event-delay-ms`` the events are spaced out in time; at 0 they go
out back to back and Envoy may read several in one go.

A bare asyncio protocol, no framework: the floor of the stream runs must be
set by Envoy, not by the stand-in (``bench/run`` measures both).

    python -m tollbench.sse_provider --port PORT [--event-delay-ms MS]
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from tollbench.payloads import stream_events

HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
BAD_REQUEST = (
    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
)
LAST_CHUNK = b"0\r\n\r\n"
MAX_HEAD_BYTES = 64 * 1024


def _chunked(event: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(event), event)


class StreamingProvider(asyncio.Protocol):
    """One client connection; answers each complete request with the stream."""

    def __init__(self, chunks: list[bytes], delay_s: float) -> None:
        self._chunks = chunks
        self._delay_s = delay_s
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while self._transport is not None:
            length = self._complete_request_length()
            if length is None:
                return
            del self._buffer[:length]
            self._answer()

    def _complete_request_length(self) -> int | None:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEAD_BYTES:
                self._refuse()
            return None

        body_bytes = 0
        for line in bytes(self._buffer[:end]).lower().split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name == b"content-length":
                body_bytes = int(value)
            elif name == b"transfer-encoding":
                # Envoy forwards the buffered body with a content-length;
                # anything else is a setup error, made visible as a 400.
                self._refuse()
                return None
        total = end + 4 + body_bytes

        return total if len(self._buffer) >= total else None

    def _answer(self) -> None:
        assert self._transport is not None
        self._transport.write(HEAD)
        if self._delay_s <= 0:
            for chunk in self._chunks:
                self._transport.write(chunk)
            self._transport.write(LAST_CHUNK)
            return
        loop = asyncio.get_running_loop()
        loop.call_later(self._delay_s, self._send_from, 0)

    def _send_from(self, index: int) -> None:
        if self._transport is None:
            return
        if index == len(self._chunks):
            self._transport.write(LAST_CHUNK)
            return
        self._transport.write(self._chunks[index])
        asyncio.get_running_loop().call_later(self._delay_s, self._send_from, index + 1)

    def _refuse(self) -> None:
        assert self._transport is not None
        self._transport.write(BAD_REQUEST)
        self._transport.close()
        self._transport = None


async def serve(port: int, delay_s: float) -> None:
    chunks = [_chunked(event) for event in stream_events()]
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: StreamingProvider(chunks, delay_s), "127.0.0.1", port, backlog=1024
    )

    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    async with server:
        await stopping.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--event-delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.event_delay_ms / 1000))


if __name__ == "__main__":
    main()
