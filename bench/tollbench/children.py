"""Child processes of the benchmark, and what /proc says about a process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

BENCH_DIR = Path(__file__).resolve().parents[1]
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


class Child:
    """A Python module of this package run as its own process.

    On enter, starts ``python -m tollbench.<module> *args`` with its output
    in ``log_path`` and returns once ``port`` on 127.0.0.1 accepts a
    connection. On exit, SIGTERM, then SIGKILL after ``stop_timeout_s``.
    """

    def __init__(
        self,
        module: str,
        args: list[str],
        *,
        port: int,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        ready_timeout_s: float = 20.0,
        stop_timeout_s: float = 5.0,
    ) -> None:
        self.argv = [sys.executable, "-m", f"tollbench.{module}", *args]
        self.port = port
        self.log_path = log_path
        self._env = {**os.environ, **(env or {}), "PYTHONPATH": str(BENCH_DIR)}
        self._ready_timeout_s = ready_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError(f"{self.argv[2]} is not running")
        return self._process.pid

    def __enter__(self) -> Self:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self._env,
            )
        try:
            self._wait_for_port()
        except BaseException:
            self.__exit__(None, None, None)
            raise

        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._process is None:
            return
        stop(self._process, self._stop_timeout_s)
        self._process = None

    def _wait_for_port(self) -> None:
        deadline = time.monotonic() + self._ready_timeout_s

        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                break
            if port_open(self.port):
                return
            time.sleep(0.05)

        raise RuntimeError(
            f"{' '.join(self.argv[1:])} did not listen on port {self.port}; "
            f"see {self.log_path}:\n{tail(self.log_path)}"
        )


def stop(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM ``process``, SIGKILL it if it outlives ``timeout_s``."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        return f"(no log: {error})"

    return "\n".join(text.splitlines()[-lines:])


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of every thread of ``pid`` so far."""
    # The command name in field 2 may hold spaces; fields after it are fixed.
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])

    return (utime + stime) / CLOCK_TICKS_PER_S


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS")


class CpuAccount:
    """How busy the whole machine was while the benchmark measured.

    Other work on a shared machine (a test suite, a hypervisor taking the
    CPU back as steal) changes every figure; this measures both so the
    report can say how quiet the machine was. ``pids`` are the benchmark's
    long-lived processes; the benchmark's own process and the children it
    waited for (wrk, py-spy) count as its own too.
    """

    def __init__(self, pids: list[int]) -> None:
        self._pids = pids
        self._start = self._read()

    def finish(self) -> tuple[float, float, float]:
        """(other processes in cores, steal as a share of all CPU, seconds)."""
        end = self._read()
        seconds = end[0] - self._start[0]
        busy = end[1] - self._start[1]
        steal = end[2] - self._start[2]
        total = end[3] - self._start[3]
        ours = end[4] - self._start[4]
        other_cores = max(0.0, busy - ours) / seconds if seconds else 0.0

        return other_cores, (steal / total if total else 0.0), seconds

    def _read(self) -> tuple[float, float, float, float, float]:
        fields = [
            int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        ]
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
        busy = (user + nice + system + irq + softirq) / CLOCK_TICKS_PER_S
        total = sum(fields[:8]) / CLOCK_TICKS_PER_S
        times = os.times()
        ours = times.user + times.system + times.children_user + times.children_system
        for pid in self._pids:
            try:
                ours += cpu_seconds(pid)
            except OSError:
                pass

        return time.monotonic(), busy, steal / CLOCK_TICKS_PER_S, total, ours
