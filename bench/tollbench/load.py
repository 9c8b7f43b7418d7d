"""Load through wrk (Debian's ``wrk`` package), driven by a generated Lua script.

The script builds one request per identity up front and rotates over them,
so a request costs wrk no string work. Its ``done`` hook prints one line of
JSON with the count, duration, errors and latency percentiles, which is
what ``run`` reads; wrk's own text report is kept only for the log.

Closed loop (the default): each connection sends its next request as soon as
the previous answer is in, so the rate found is the setup's maximum at that
concurrency. Paced: each connection waits a random time (uniform, mean as
asked) between an answer and its next request, which spreads requests
over time and holds the rate near ``connections / (pause + latency)``.
Latency is timed by wrk from the moment a request is written.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tollbench import payloads

RESULT_MARK = "BENCH_RESULT "


class WrkMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class LoadResult:
    requests: int
    duration_s: float
    errors: int
    """Connect, read, write and timeout errors plus answers with status >= 400."""
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0


def ensure_wrk(*, install: bool) -> str:
    """The path of wrk; installs Debian's package when allowed and missing."""
    found = shutil.which("wrk")
    if found:
        return found
    if install and os.geteuid() == 0 and shutil.which("apt-get"):
        print(
            "bench/run: wrk is missing; installing Debian's wrk package",
            file=sys.stderr,
            flush=True,
        )
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False, env=env)
        found = shutil.which("wrk")
        if found:
            return found
    raise WrkMissing(
        "wrk is not installed and could not be installed here; "
        "install it with `apt-get install wrk` (Debian package wrk) and run again"
    )


def write_script(
    path: Path, *, stream: bool, pause_mean_ms: float | None = None
) -> Path:
    """The Lua script for one kind of call; paced when ``pause_mean_ms`` is set."""
    body = payloads.request_body(stream=stream)
    requests = [
        f"  requests[{index + 1}] = wrk.format('POST', {_lua(payloads.PATH)}, "
        f"{_lua_table(payloads.request_headers(identity, stream=stream))}, "
        f"{_lua(body.decode())})"
        for index, identity in enumerate(payloads.IDENTITIES)
    ]
    pacing = ""
    if pause_mean_ms is not None:
        # wrk truncates the pause to whole milliseconds: add half of one
        # so that the mean stays as asked.
        pacing = (
            "function delay()\n"
            f"  return math.random() * {2 * pause_mean_ms:.3f} + 0.5\n"
            "end\n"
        )
    script = _SCRIPT.format(
        requests="\n".join(requests), pacing=pacing, mark=RESULT_MARK
    )
    path.write_text(script)

    return path


def run(
    wrk: str,
    port: int,
    script: Path,
    *,
    connections: int,
    duration_s: float,
    log_path: Path,
    timeout_s: float = 5.0,
) -> LoadResult:
    """Run wrk with one thread against 127.0.0.1:``port``; raise if it fails."""
    # One thread: wrk shares this machine's cores with everything it measures.
    argv = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{duration_s:g}s",
        f"--timeout={timeout_s:g}s",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}",
    ]
    completed = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration_s + 60, check=False
    )
    with log_path.open("a") as log:
        log.write(" ".join(argv) + "\n" + completed.stdout + completed.stderr + "\n")

    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return _result(json.loads(line[len(RESULT_MARK) :]))
    raise RuntimeError(
        f"wrk gave no result (exit {completed.returncode}):\n"
        f"{completed.stdout[-2000:]}{completed.stderr[-2000:]}"
    )


def _result(raw: dict[str, float]) -> LoadResult:
    errors = sum(
        int(raw[kind]) for kind in ("connect", "read", "write", "status", "timeout")
    )

    return LoadResult(
        requests=int(raw["requests"]),
        duration_s=raw["duration_us"] / 1e6,
        errors=errors,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        mean_ms=raw["mean_us"] / 1000,
    )


def _lua(text: str) -> str:
    # A Lua long bracket string needs no escaping unless it holds the closer.
    level = "=" * 3
    assert f"]{level}]" not in text
    return f"[{level}[{text}]{level}]"


def _lua_table(headers: dict[str, str]) -> str:
    items = ", ".join(
        f"[ {_lua(name)} ] = {_lua(value)}" for name, value in headers.items()
    )
    return "{" + items + "}"


_SCRIPT = """\
-- Generated by bench/run; see bench/tollbench/load.py.
local requests = {{}}
local next_index = 0

function init(args)
{requests}
end

function request()
  next_index = next_index % #requests + 1
  return requests[next_index]
end

{pacing}
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{mark}{{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,'
    .. '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,'
    .. '"max_us":%d,"mean_us":%d}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean))
end
"""
