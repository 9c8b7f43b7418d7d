"""Sampling the Tollgate process with py-spy while load runs through it.

py-spy samples the Python stacks of a running process from outside (no
change to Tollgate, ``--nonblocking`` so it never pauses the server). Idle
samples (a thread waiting in epoll) are dropped, so the shares below are
shares of the CPU the process actually used. Time spent inside a C
extension (protobuf, gRPC's core, hiredis) is charged to the Python frame
that called it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tollbench.children import BENCH_DIR

REPO_ROOT = str(BENCH_DIR.parent) + "/"

AREA_OF_FRAME = {
    # Own time of these frames is C or Cython code they call, which py-spy
    # cannot see without --native: on the event loop that is grpc.aio's
    # Cython callbacks and C task steps; the thread is gRPC's poller.
    "Handle._run": "C/Cython under asyncio callbacks (mostly grpc.aio)",
    "Thread.run": "gRPC poller thread (Cython)",
    "EpollSelector.select": "asyncio: polling",
}


class PySpyMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class Profile:
    samples: int
    own: Counter[str]
    """Samples whose innermost frame is this function."""
    inclusive: Counter[str]
    """Samples with this function anywhere on the stack."""
    areas: Counter[str]
    """Own samples grouped by where the code lives."""


def ensure_py_spy(*, install: bool) -> str:
    """The py-spy executable; pip-installs it into this venv when allowed."""
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found:
        return found
    if install:
        print(
            f"bench/run: py-spy is missing; installing it with {sys.executable} -m pip",
            file=sys.stderr,
            flush=True,
        )
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "py-spy"], check=False
        )
        if beside.exists():
            return str(beside)
    raise PySpyMissing(
        "py-spy is not installed; `pip install py-spy` into the venv that "
        "runs bench/run, then run again"
    )


def start(
    py_spy: str, pid: int, duration_s: float, out: Path, *, native: bool = False
) -> subprocess.Popen[bytes]:
    """Start sampling ``pid`` for ``duration_s``; collapsed stacks to ``out``.

    ``native`` adds C and Cython frames; py-spy must then stop the process
    for every sample, which slows it down considerably.
    """
    argv = [
        py_spy,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(int(duration_s)),
        "--rate",
        "200",
        "--format",
        "raw",
        "--full-filenames",
        "--output",
        str(out),
        "--native" if native else "--nonblocking",
    ]
    if os.geteuid() != 0:
        argv.insert(0, "sudo")  # reading another process's memory needs ptrace rights

    return subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=out.with_suffix(".log").open("wb")
    )


def read(path: Path) -> Profile:
    """Parse py-spy's raw (collapsed) output: ``frame;frame;... count``."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    samples = 0

    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(frame) for frame in stack.split(";") if frame]
        frames = [f for f in frames if f]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        areas[_area(frames[-1])] += count
        for function in set(frames):
            inclusive[function] += count

    return Profile(samples, own, inclusive, areas)


def _function(frame: str) -> str:
    # "name (path/to/file.py:123)" -> "name (file-path-from-package)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    return f"{name} ({_short(path)})" if path else name


def _short(path: str) -> str:
    if path.startswith(REPO_ROOT):
        return path[len(REPO_ROOT) :]
    for marker in ("/site-packages/", "/lib/python3"):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "/lib/python3" else tail
    return path


def _area(function: str) -> str:
    name, _, where = function.partition(" (")
    if name in AREA_OF_FRAME:
        return AREA_OF_FRAME[name]
    if where.startswith("extproc/"):
        return "tollgate: extproc/" + where.split("/")[1].removesuffix(".py)")
    for prefix, area in (
        ("grpc/", "grpc (aio + core)"),
        ("google/protobuf", "protobuf"),
        ("redis/", "redis-py"),
        ("asyncio/", "asyncio (Python)"),
        ("genai_prices/", "genai-prices"),
        ("pydantic", "pydantic"),
        ("logging/", "logging"),
        ("opentelemetry", "opentelemetry"),
        ("json/", "json"),
        ("<string>", "generated code (dataclass __init__)"),
        ("bench/", "the no-op server itself"),
        ("<frozen abc>", "isinstance on ABCs"),
        ("typing.py", "typing (runtime checks)"),
        ("threading.py", "threading"),
        ("selectors.py", "asyncio: polling"),
    ):
        if where.startswith(prefix):
            return area
    return "other: " + (where.split("/")[0].rstrip(")") or "?")
