"""A throw-away Redis Cluster of three masters on 127.0.0.1, for tests.

Each node is a ``RedisProcess`` started with cluster mode on, its client and
bus ports free ones; ``redis-cli --cluster create`` then splits the 16384
slots between them. Ready when every node's ``CLUSTER INFO`` says
``cluster_state:ok``: 1 to 4.5 s, mostly redis-cli waiting (in whole
seconds) for the nodes to learn of each other by gossip.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis

from extproc.errors import ConfigError
from extproc.local import RedisProcess, free_port, redis_server_binary

MASTERS = 3


class ClusterNode(RedisProcess):
    """A redis-server with cluster mode on and its bus on a free port."""

    def __init__(self, *, workdir: Path) -> None:
        super().__init__(workdir=workdir)
        self.bus_port = free_port()

    def _argv(self, binary: Path) -> list[str]:
        return super()._argv(binary) + [
            "--cluster-enabled",
            "yes",
            "--cluster-port",
            str(self.bus_port),
            "--cluster-config-file",
            str(self.workdir / "nodes.conf"),
            "--cluster-node-timeout",
            "5000",
        ]


class RedisClusterProcesses:
    """Three cluster nodes for one ``with`` block; ``url`` names the first."""

    def __init__(self, *, workdir: Path, ready_timeout_s: float = 15.0) -> None:
        self.nodes = [ClusterNode(workdir=workdir / f"node{i}") for i in range(MASTERS)]
        self.ready_timeout_s = ready_timeout_s

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}"

    def __enter__(self) -> RedisClusterProcesses:
        try:
            for node in self.nodes:
                node.start()
            self._create()
            self._wait_until_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def _create(self) -> None:
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        done = subprocess.run(
            [
                _redis_cli(),
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=self.ready_timeout_s,
            check=False,
        )
        if done.returncode != 0:
            raise ConfigError(
                f"redis-cli --cluster create failed:\n{done.stdout}{done.stderr}"
            )

    def _wait_until_ok(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        pending = list(self.nodes)
        while pending and time.monotonic() < deadline:
            pending = [node for node in pending if not _cluster_ok(node.port)]
            if pending:
                time.sleep(0.05)
        if pending:
            raise ConfigError(
                f"Redis Cluster not ok within {self.ready_timeout_s}s on ports "
                f"{[node.port for node in pending]}"
            )


def _cluster_ok(port: int) -> bool:
    with redis.Redis(port=port, socket_timeout=1) as client:
        info = client.execute_command("CLUSTER", "INFO")
    text = info.decode() if isinstance(info, bytes) else str(info)
    return "cluster_state:ok" in text


def _redis_cli() -> str:
    beside = redis_server_binary().with_name("redis-cli")
    found = str(beside) if beside.exists() else shutil.which("redis-cli")
    if found is None:
        raise ConfigError("redis-cli not found (it comes with redis-server)")
    return found
