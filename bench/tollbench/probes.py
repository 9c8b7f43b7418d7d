"""Counters read before and after a run: CPU, Redis, Envoy's ext_proc stats.

Redis counts a command run inside a Lua script (``redis.call``) like one a
client sent, both in ``total_commands_processed`` and in ``commandstats``.
So the commands per request reported from those counters include the
scripts' own commands; the round trips (what a client waits for) are the
script calls plus anything sent outside a script, and ``monitor_sample``
counts them exactly by watching which connection issued each command.
"""

from __future__ import annotations

import re
import socket
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from tollbench.children import cpu_seconds
from tollbench.topology import Gateway

SCRIPT_COMMANDS = ("evalsha", "eval", "evalsha_ro", "eval_ro", "fcall", "fcall_ro")
ENVOY_STATS = ("downstream_rq_completed", "streams_started", "stream_msgs_sent")


@dataclass(frozen=True)
class Snapshot:
    """The counters of one gateway at one moment."""

    extproc_cpu_s: float | None
    envoy_cpu_s: float
    envoy_stats: dict[str, int]
    redis_total: int | None = None
    redis_calls: dict[str, int] = field(default_factory=dict)
    redis_cpu_s: float | None = None


@dataclass(frozen=True)
class Delta:
    """What changed between two snapshots, per request where it says so."""

    extproc_cpu_us_per_request: float | None
    envoy_cpu_us_per_request: float
    extproc_messages_per_request: float | None
    """Messages Envoy sent to the ext_proc server (all ext_proc filters), per
    HTTP request Envoy completed."""
    redis_commands_per_request: float | None
    """Every command Redis ran, script-inner ones included."""
    redis_script_calls_per_request: float | None
    redis_cpu_us_per_request: float | None
    redis_calls: dict[str, int]


def snapshot(gateway: Gateway) -> Snapshot:
    redis_total, redis_calls, redis_cpu = None, {}, None
    if gateway.redis is not None:
        redis_total, redis_calls, redis_cpu = _redis_counters(gateway.redis.url)

    return Snapshot(
        extproc_cpu_s=(
            sum(cpu_seconds(pid) for pid in gateway.extproc_pids)
            if gateway.extproc_pids
            else None
        ),
        envoy_cpu_s=cpu_seconds(gateway.envoy_pid),
        envoy_stats=_envoy_extproc_stats(gateway),
        redis_total=redis_total,
        redis_calls=redis_calls,
        redis_cpu_s=redis_cpu,
    )


def delta(before: Snapshot, after: Snapshot, requests: int) -> Delta:
    per = max(requests, 1)
    extproc_cpu = None
    if before.extproc_cpu_s is not None and after.extproc_cpu_s is not None:
        extproc_cpu = (after.extproc_cpu_s - before.extproc_cpu_s) / per * 1e6

    completed = _grown(before.envoy_stats, after.envoy_stats, "downstream_rq_completed")
    messages = _grown(before.envoy_stats, after.envoy_stats, "stream_msgs_sent")
    messages_per_request = messages / completed if completed else None

    calls = {
        name: after.redis_calls.get(name, 0) - before.redis_calls.get(name, 0)
        for name in after.redis_calls
    }
    calls = {name: count for name, count in calls.items() if count and name != "info"}
    commands = script_calls = redis_cpu = None
    if before.redis_cpu_s is not None and after.redis_cpu_s is not None:
        redis_cpu = (after.redis_cpu_s - before.redis_cpu_s) / per * 1e6
    if before.redis_total is not None and after.redis_total is not None:
        # The INFO of the first snapshot is counted; the second's is not yet.
        commands = (after.redis_total - before.redis_total - 1) / per
        script_calls = sum(calls.get(name, 0) for name in SCRIPT_COMMANDS) / per

    return Delta(
        extproc_cpu_us_per_request=extproc_cpu,
        envoy_cpu_us_per_request=(after.envoy_cpu_s - before.envoy_cpu_s) / per * 1e6,
        extproc_messages_per_request=messages_per_request,
        redis_commands_per_request=commands,
        redis_script_calls_per_request=script_calls,
        redis_cpu_us_per_request=redis_cpu,
        redis_calls=calls,
    )


def _grown(before: dict[str, int], after: dict[str, int], name: str) -> int:
    return after.get(name, 0) - before.get(name, 0)


def _redis_counters(url: str) -> tuple[int, dict[str, int], float]:
    client = redis.Redis.from_url(url)
    try:
        # One INFO for every section, so exactly one INFO lands in a delta.
        info = client.info("all")
    finally:
        client.close()
    calls = {
        key.removeprefix("cmdstat_"): int(value["calls"])
        for key, value in info.items()
        if key.startswith("cmdstat_")
    }

    cpu_s = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    return int(info["total_commands_processed"]), calls, cpu_s


# Two ext_proc filters with the same stat prefix share these counters.
_STAT_LINE = re.compile(r"^http\.tollgate\.(?:ext_proc\.)?(\w+): (\d+)$")


def _envoy_extproc_stats(gateway: Gateway) -> dict[str, int]:
    if gateway.extproc_pid is None:
        return {}
    wanted = r"^http\.tollgate\.(ext_proc\.|downstream_rq_completed)"
    text = gateway.envoy.admin_get("/stats?filter=" + urllib.parse.quote(wanted))
    stats: dict[str, int] = {}
    for line in text.splitlines():
        match = _STAT_LINE.match(line.strip())
        if match and match.group(1) in ENVOY_STATS:
            stats[match.group(1)] = stats.get(match.group(1), 0) + int(match.group(2))

    return stats


BACKGROUND_COMMANDS = {
    "ZRANGEBYSCORE": "lease sweep",
    "HGETALL": "lease sweep",
    "PING": "connection health check",
}
"""Commands Tollgate sends on a timer rather than per request."""


@dataclass(frozen=True)
class MonitorSample:
    """Commands Redis ran while ``requests`` calls went through, by origin."""

    requests: int
    from_clients: Counter[str]
    """Commands a client sent per request: one round trip each (nothing is
    pipelined)."""
    background: Counter[str]
    """Commands of ``BACKGROUND_COMMANDS`` seen during the sample."""
    from_scripts: Counter[str]

    @property
    def round_trips_per_request(self) -> float:
        return sum(self.from_clients.values()) / max(self.requests, 1)


def monitor_sample(
    redis_port: int, send: Callable[[], None], requests: int, *, settle_s: float = 0.5
) -> MonitorSample:
    """Run ``send`` (which makes ``requests`` calls) under Redis MONITOR.

    MONITOR slows Redis down, so this runs apart from the timed runs. A
    command issued from a Lua script shows as ``[0 lua]``; one a client sent
    shows its address. The monitoring connection's own commands are left out.
    Settlements run after a call's stream has ended, so the sample waits
    ``settle_s`` before and after, and counts exactly the calls it made.
    """
    time.sleep(settle_s)
    sock = socket.create_connection(("127.0.0.1", redis_port), timeout=5)
    sock.sendall(b"MONITOR\r\n")
    lines: list[bytes] = []
    stopping = threading.Event()
    reader = threading.Thread(
        target=_read_lines, args=(sock, lines, stopping), daemon=True
    )
    reader.start()
    time.sleep(0.1)

    send()
    time.sleep(settle_s)  # settlement runs after the stream ends
    stopping.set()
    sock.shutdown(socket.SHUT_RDWR)
    reader.join(timeout=5)
    sock.close()

    from_clients: Counter[str] = Counter()
    background: Counter[str] = Counter()
    from_scripts: Counter[str] = Counter()
    for line in lines:
        parsed = _monitor_line(line)
        if parsed is None:
            continue
        origin, command = parsed
        if origin == "lua":
            from_scripts[command] += 1
        elif command in BACKGROUND_COMMANDS:
            background[command] += 1
        else:
            from_clients[command] += 1

    return MonitorSample(requests, from_clients, background, from_scripts)


_MONITOR_LINE = re.compile(rb'^\+[\d.]+ \[\d+ ([^\]]+)\] "([^"]+)"')


def _monitor_line(line: bytes) -> tuple[str, str] | None:
    match = _MONITOR_LINE.match(line)
    if match is None:
        return None

    return match.group(1).decode(), match.group(2).decode().upper()


def _read_lines(
    sock: socket.socket, lines: list[bytes], stopping: threading.Event
) -> None:
    pending = b""
    while not stopping.is_set():
        try:
            data = sock.recv(65536)
        except OSError:
            return
        if not data:
            return
        pending += data
        *complete, pending = pending.split(b"\r\n")
        lines.extend(complete)
