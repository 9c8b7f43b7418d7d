"""Tables, the targets of the issue, and the machine-readable last line."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tollbench.load import LoadResult
from tollbench.probes import BACKGROUND_COMMANDS, Delta, MonitorSample
from tollbench.profiling import Profile
from tollbench.topology import FLOOR, FULL, NOOP

JSON, STREAM = "json", "sse"
TARGET_RATIO = 0.60
TARGET_ADDED_P99_MS = 5.0
TARGET_ROUND_TRIPS = 2
TARGET_ADDED_TTFB_P50_MS = 1.0
TARGET_RSS_GROWTH = 0.10
TARGET_CONNECTIONS = 16


@dataclass(frozen=True)
class Row:
    """One load run of one setup."""

    mode: str
    setup: str
    connections: int
    load: LoadResult
    delta: Delta
    other_cores: float = 0.0
    """CPU that processes outside the benchmark used meanwhile, in cores."""
    steal: float = 0.0


@dataclass(frozen=True)
class FirstByte:
    """Stream time to first body byte of one setup, unloaded."""

    setup: str
    samples: int
    p50_ms: float
    p99_ms: float
    failures: int


def find(rows: Iterable[Row], mode: str, setup: str, connections: int) -> Row | None:
    for row in rows:
        if (row.mode, row.setup, row.connections) == (mode, setup, connections):
            return row
    return None


def load_table(rows: Sequence[Row], title: str) -> list[str]:
    header = (
        "setup",
        "conc",
        "req/s",
        "p50 ms",
        "p99 ms",
        "x floor",
        "x noop",
        "errors",
        "msgs/req",
        "redis cmd/req",
        "scripts/req",
        "ext_proc CPU us/req",
        "envoy CPU us/req",
        "redis CPU us/req",
        "busy elsewhere",
    )
    body = []
    for row in rows:
        floor = find(rows, row.mode, FLOOR, row.connections)
        noop = find(rows, row.mode, NOOP, row.connections)
        d = row.delta
        body.append(
            (
                row.setup,
                str(row.connections),
                f"{row.load.rps:,.0f}",
                f"{row.load.p50_ms:.2f}",
                f"{row.load.p99_ms:.2f}",
                _ratio(row, floor),
                _ratio(row, noop),
                str(row.load.errors),
                _num(d.extproc_messages_per_request, 2),
                _num(d.redis_commands_per_request, 1),
                _num(d.redis_script_calls_per_request, 2),
                _num(d.extproc_cpu_us_per_request, 0),
                _num(d.envoy_cpu_us_per_request, 0),
                _num(d.redis_cpu_us_per_request, 0),
                _busy(row),
            )
        )

    return [title, *_grid(header, body)]


def half_load_table(rows: Sequence[Row], title: str) -> list[str]:
    header = (
        "setup",
        "req/s",
        "p50 ms",
        "p99 ms",
        "added p50 ms",
        "added p99 ms",
        "errors",
        "ext_proc CPU us/req",
        "busy elsewhere",
    )
    floor = next((r for r in rows if r.setup == FLOOR), None)
    body = []
    for row in rows:
        body.append(
            (
                row.setup,
                f"{row.load.rps:,.0f}",
                f"{row.load.p50_ms:.2f}",
                f"{row.load.p99_ms:.2f}",
                _added(row.load.p50_ms, floor.load.p50_ms if floor else None),
                _added(row.load.p99_ms, floor.load.p99_ms if floor else None),
                str(row.load.errors),
                _num(row.delta.extproc_cpu_us_per_request, 0),
                _busy(row),
            )
        )

    return [title, *_grid(header, body)]


def first_byte_table(results: Sequence[FirstByte], title: str) -> list[str]:
    header = (
        "setup",
        "samples",
        "p50 ms",
        "p99 ms",
        "added p50 ms",
        "added p99 ms",
        "failures",
    )
    floor = next((r for r in results if r.setup == FLOOR), None)
    body = [
        (
            r.setup,
            str(r.samples),
            f"{r.p50_ms:.3f}",
            f"{r.p99_ms:.3f}",
            _added(r.p50_ms, floor.p50_ms if floor else None, 3),
            _added(r.p99_ms, floor.p99_ms if floor else None, 3),
            str(r.failures),
        )
        for r in results
    ]

    return [title, *_grid(header, body)]


def monitor_lines(sample: MonitorSample, calls: str) -> list[str]:
    per = max(sample.requests, 1)
    clients = ", ".join(
        f"{name} {count / per:.2f}" for name, count in sample.from_clients.most_common()
    )
    scripts = ", ".join(
        f"{name} {count / per:.2f}" for name, count in sample.from_scripts.most_common()
    )
    inner = sum(sample.from_scripts.values()) / per
    background = ", ".join(
        f"{name} x{count} ({BACKGROUND_COMMANDS[name]})"
        for name, count in sample.background.most_common()
    )

    return [
        f"Redis round trips (MONITOR while {calls} went through full, one at a time):",
        (
            f"  sent by Tollgate per request: {sample.round_trips_per_request:.2f} "
            f"({clients or 'none'})"
        ),
        f"  on timers during the sample, not per request: {background or 'none'}",
        f"  run inside those scripts, per request: {inner:.2f} ({scripts or 'none'})",
    ]


def profile_comparison(profiles: dict[str, tuple[Profile, Row]]) -> list[str]:
    """CPU per request by area, side by side for the profiled processes."""
    names = list(profiles)
    per_sample = {
        name: (row.delta.extproc_cpu_us_per_request or 0.0) / max(prof.samples, 1)
        for name, (prof, row) in profiles.items()
    }
    areas = Counter[str]()
    for prof, _ in profiles.values():
        areas.update(prof.areas)

    header = ("area (own time)", *(f"{name} us/req" for name in names))
    body = []
    for area, _ in areas.most_common(16):
        cells = [f"{profiles[n][0].areas[area] * per_sample[n]:,.0f}" for n in names]
        body.append((area, *cells))
    totals = [
        f"{profiles[n][1].delta.extproc_cpu_us_per_request or 0:,.0f}" for n in names
    ]
    body.append(("all (measured CPU per request)", *totals))
    rates = [f"{profiles[n][1].load.rps:,.0f}" for n in names]
    body.append(("req/s while profiled", *rates))

    return _grid(header, body)


def profile_lines(profile: Profile, top: int, title: str) -> list[str]:
    total = max(profile.samples, 1)
    lines = [f"Top of {title} ({profile.samples} non-idle samples)"]
    lines.append(f"  top {top} functions by own time:")
    lines += [
        f"    {count / total:6.1%}  {name}"
        for name, count in profile.own.most_common(top)
    ]
    lines.append(f"  top {top} functions by inclusive time, entry plumbing left out:")
    inclusive = [
        (name, count)
        for name, count in profile.inclusive.most_common()
        if not _is_plumbing(name)
    ]
    lines += [f"    {count / total:6.1%}  {name}" for name, count in inclusive[:top]]

    return lines


_PLUMBING = (
    "<module>",
    "_run_code",
    "_run_module_as_main",
    "asyncio/runners.py",
    "run_until_complete",
    "run_forever",
    "_run_once",
    "Handle._run",
    "extproc/cli.py",
    "extproc/__main__.py",
    "run (extproc/server/app.py)",
    "Thread._bootstrap",
    "Thread.run",
    "thread_run",
    "task_step",
)


def _is_plumbing(name: str) -> bool:
    # Frames that sit under most stacks say nothing about where time goes.
    return any(marker in name for marker in _PLUMBING)


def _busy(row: Row) -> str:
    text = f"{row.other_cores:.2f}"
    return text + (f" st {row.steal:.0%}" if row.steal >= 0.005 else "")


def verdict(met: bool | None) -> str:
    if met is None:
        return "NOT MEASURED"
    return "MET" if met else "MISSED"


def _ratio(row: Row, base: Row | None) -> str:
    if base is None or base is row or not base.load.rps:
        return "-"
    return f"{row.load.rps / base.load.rps:.2f}"


def _added(value: float, base: float | None, digits: int = 2) -> str:
    return "-" if base is None else f"{value - base:+.{digits}f}"


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _grid(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    widths = [
        max(len(header[i]), *(len(row[i]) for row in body)) if body else len(header[i])
        for i in range(len(header))
    ]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:]))
        return "  " + "  ".join([first, *rest])

    return [line(header), *(line(row) for row in body)]


__all__ = [
    "FULL",
    "JSON",
    "NOOP",
    "STREAM",
    "FirstByte",
    "Row",
    "find",
    "first_byte_table",
    "half_load_table",
    "load_table",
    "monitor_lines",
    "profile_comparison",
    "profile_lines",
    "verdict",
]
