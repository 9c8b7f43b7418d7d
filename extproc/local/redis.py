"""Run a throw-away redis-server for local runs and fault tests."""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from pathlib import Path

from extproc.errors import ConfigError
from extproc.local import _process
from extproc.local.binaries import redis_server_binary
from extproc.local.ports import free_port

logger = logging.getLogger(__name__)


class RedisProcess(_process.Child):
    """A redis-server on 127.0.0.1 with no persistence, for one ``with`` block.

    The port is fixed at construction (a free one when ``port`` is None) and
    kept across ``stop()`` / ``start()``, so a fault test can take Redis away
    and bring it back where clients expect it. Data does not survive a
    restart: snapshots and the append-only file are off.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        workdir: Path,
        binary: Path | None = None,
        ready_timeout_s: float = 10.0,
        stop_timeout_s: float = 5.0,
        durable: bool = False,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.port = port if port is not None else free_port()
        self.durable = durable  # append-only file, fsync'd: data survives restarts
        self.extra_args = extra_args  # more redis-server options, as on its CLI
        self.workdir = Path(workdir)
        self.binary = binary
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.log_path = self.workdir / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The process id of the running redis-server, or None."""
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start redis-server on ``self.port`` and wait until it answers PING.

        Raises ``ConfigError`` with the tail of its log if it exits (for
        example, the port is taken) or does not answer in time.
        """
        if self.running:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)

        self._process = _process.spawn(
            self._argv(self.binary or redis_server_binary()),
            self.log_path,
            cwd=self.workdir,
        )
        try:
            self._wait_for_pong()
        except BaseException:
            self.stop()
            raise

        logger.info("redis live pid=%d port=%d", self._process.pid, self.port)

    def stop(self) -> None:
        """Terminate redis-server if it runs; idempotent."""
        if self._process is None:
            return
        code = _process.terminate(self._process, timeout_s=self.stop_timeout_s)
        logger.debug("redis stopped pid=%d code=%s", self._process.pid, code)
        self._process = None

    def _argv(self, binary: Path) -> list[str]:
        return [
            str(binary),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if self.durable else "no",
            "--appendfsync",
            "always",
            "--dir",
            str(self.workdir),
            *self.extra_args,
        ]

    def _wait_for_pong(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s

        while time.monotonic() < deadline:
            assert self._process is not None
            code = self._process.poll()
            if code is not None:
                raise ConfigError(
                    f"redis-server exited with code {code} on port {self.port}; "
                    f"last lines of {self.log_path}:\n"
                    f"{_process.log_tail(self.log_path)}"
                )
            if _answers_ping(self.port):
                return
            time.sleep(0.05)

        raise ConfigError(
            f"redis-server did not answer PING on port {self.port} within "
            f"{self.ready_timeout_s}s; last lines of {self.log_path}:\n"
            f"{_process.log_tail(self.log_path)}"
        )


def _answers_ping(port: int) -> bool:
    # An inline command keeps this free of a client library and of pools.
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            reply = conn.recv(64)
    except OSError:
        return False

    # A server that requires a password answers, but with NOAUTH.
    return reply.startswith((b"+PONG", b"-NOAUTH"))
