"""Run ``tollgate serve`` as a child process, for ``tollgate up`` and tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from extproc.errors import ConfigError
from extproc.local import _process
from extproc.local.ports import free_port


class ExtprocProcess(_process.Child):
    """The ext_proc server in its own process, for one ``with`` block.

    ``settings`` are ``TOLLGATE_*`` variables (without the prefix) added to
    this process's environment; ``env`` adds other variables (credentials).
    The gRPC address is fixed at construction and kept across ``restart``:
    ``127.0.0.1:port``, or ``listen`` when given (for example
    ``unix:/path/extproc.sock``, as in a gateway pod).
    On enter, returns once the gRPC health service answers SERVING.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        settings: dict[str, str],
        env: dict[str, str] | None = None,
        port: int | None = None,
        listen: str | None = None,
        ready_timeout_s: float = 20.0,
        stop_timeout_s: float = 15.0,
    ) -> None:
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.address = listen or f"127.0.0.1:{self.port}"
        self.log_path = self.workdir / "extproc.log"
        self._env = {**os.environ, **(env or {})}
        self._env.update({f"TOLLGATE_{k.upper()}": v for k, v in settings.items()})
        self._env["TOLLGATE_GRPC_LISTEN"] = self.address
        self._ready_timeout_s = ready_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until its health check says SERVING."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "extproc", "serve"]
        self._process = _process.spawn(
            argv, self.log_path, cwd=self.workdir, env=self._env
        )
        self._wait_serving()

    def stop(self) -> int | None:
        """SIGTERM (the server settles open calls), SIGKILL after the timeout."""
        if self._process is None:
            return None
        code = _process.terminate(self._process, timeout_s=self._stop_timeout_s)
        self._process = None
        return code

    def kill(self) -> None:
        """SIGKILL: the process dies without settling anything."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def _wait_serving(self) -> None:
        deadline = time.monotonic() + self._ready_timeout_s
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self._process is None or self._process.poll() is not None:
                    break
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    time.sleep(0.1)
        self.stop()
        raise ConfigError(
            "tollgate serve did not become ready:\n" + _process.log_tail(self.log_path)
        )
