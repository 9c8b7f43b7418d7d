"""A local HTTP/1.1 server that plays a provider.

``StandIn(responder)`` records every request and answers it with whatever
``responder`` returns. Replies with several chunks (or no content-length) go
out chunked, one write and flush per chunk with an optional pause between,
so a stream reaches Envoy, the ext_proc server and the client chunk by chunk
the way a provider's server-sent events do. With ``ssl_context`` it speaks
HTTPS and presents that context's certificate (for example one for a
provider's real name, from a test CA).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from extproc.local import _process

logger = logging.getLogger(__name__)

DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)
# Headers the stand-in frames itself; a responder's values would contradict
# the framing actually sent.
FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the stand-in received it; header names lower-cased."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Reply:
    """What the stand-in answers.

    Sent with ``content-length`` when ``headers`` has one and there is at
    most one chunk (the value is sent as given: declaring more than the body
    makes a truncated reply, the connection closing after the body);
    otherwise chunked, each chunk written and flushed on its own with
    ``chunk_delay_s`` between chunks. ``end_delay_s`` pauses after the last
    chunk before the body ends: a server that flushes its last event and
    closes the body later. ``reset`` drops the connection after the chunks
    instead of ending the body: an upstream failing mid-stream. ``hang_up``
    closes the connection without any answer: a provider that took the
    request and failed before its response began.
    """

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    chunk_delay_s: float = 0.0
    end_delay_s: float = 0.0
    reset: bool = False
    hang_up: bool = False

    @property
    def is_chunked(self) -> bool:
        names = {name.lower() for name in self.headers}
        return len(self.chunks) > 1 or "content-length" not in names


Responder = Callable[[RecordedRequest], Reply]


class StandIn(_process.Started):
    """A threaded HTTP/1.1 server on 127.0.0.1 answering with ``responder``.

    Use as a context manager; ``port`` and ``url`` are valid inside the
    block. ``requests`` returns a snapshot of what was received, in order.
    A client that disconnects mid-reply ends only that reply.
    """

    def __init__(
        self,
        responder: Responder,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.responder = responder
        self._address = (host, port)
        self._ssl_context = ssl_context
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the stand-in is not running")
        port: int = self._server.server_address[1]
        return port

    @property
    def url(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def start(self) -> None:
        self._server = _Server(self._address, _Handler, owner=self)
        if self._ssl_context is not None:
            # The handshake runs in accept(), on the serving thread; a client
            # that fails it (say, one that refuses the certificate) raises an
            # OSError there, which the server drops with that connection.
            self._server.socket = self._ssl_context.wrap_socket(
                self._server.socket, server_side=True
            )
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            name=f"standin-{self.port}",
            daemon=True,
        )
        self._thread.start()
        logger.debug("stand-in listening port=%d", self.port)

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        *,
        owner: StandIn,
    ) -> None:
        self.owner = owner
        super().__init__(address, handler)

    def handle_error(self, request: object, client_address: object) -> None:
        # The default prints a traceback to stderr for every dropped client.
        logger.debug("stand-in connection error client=%s", client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # An idle keep-alive connection (Envoy pools them) ends its thread after
    # this long instead of pinning it until the process exits.
    timeout = 30
    server: _Server

    def handle(self) -> None:
        try:
            super().handle()
        except DISCONNECTS:
            logger.debug("stand-in client went away client=%s", self.client_address)
        except TimeoutError:
            pass

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("stand-in " + format, *args)

    def _serve(self) -> None:
        request = RecordedRequest(
            method=self.command,
            path=self.path,
            headers={name.lower(): value for name, value in self.headers.items()},
            body=self._read_body(),
        )
        self.server.owner._record(request)

        reply = self._reply_for(request)

        self._write(reply)

    def _reply_for(self, request: RecordedRequest) -> Reply:
        try:
            return self.server.owner.responder(request)
        except Exception:
            logger.exception("stand-in responder failed path=%s", request.path)
            body = b"stand-in responder failed\n"
            return Reply(
                500,
                {"content-type": "text/plain", "content-length": str(len(body))},
                [body],
            )

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("content-length") or 0)

        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size_line = self.rfile.readline()
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                # Trailers, if any, end with an empty line.
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    def _write(self, reply: Reply) -> None:
        if reply.hang_up:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            if name.lower() not in FRAMING_HEADERS:
                self.send_header(name, value)

        if not reply.is_chunked:
            self._write_whole(reply)
            return

        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        self._write_chunks(reply)

    def _write_whole(self, reply: Reply) -> None:
        # The responder's content-length is sent as given, so a test can
        # declare more than it sends: the connection is then closed after
        # the short body, which is how a truncated upstream reply looks.
        body = b"".join(reply.chunks)
        declared = next(
            value
            for name, value in reply.headers.items()
            if name.lower() == "content-length"
        )
        self.send_header("content-length", declared)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if declared.strip() != str(len(body)):
            self.close_connection = True

    def _write_chunks(self, reply: Reply) -> None:
        for index, chunk in enumerate(reply.chunks):
            if index and reply.chunk_delay_s:
                time.sleep(reply.chunk_delay_s)
            if not chunk:
                # A zero-length chunk would end the body early.
                continue
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
        if reply.end_delay_s:
            time.sleep(reply.end_delay_s)
        if reply.reset:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
