"""``tollgate up --demo`` as a user runs it: up, answering, and stopped whole."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from extproc.local.ports import free_port

pytestmark = pytest.mark.e2e

BODY = {
    "model": "gpt-4o-mini",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "Hello"}],
}


class Up:
    """One ``tollgate up --demo`` process and what its banner said."""

    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.port = port
        self.banner = _read_banner(process)
        found = re.search(r"logs\s+(\S+)", self.banner)
        self.logs = Path(found.group(1)) if found else None

    def chat(self, identity: str = "alice") -> tuple[int, dict]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/openai/v1/chat/completions",
            data=json.dumps(BODY).encode(),
            headers={
                "content-type": "application/json",
                "x-tollgate-identity": identity,
            },
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())

    def child_pids(self) -> list[int]:
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == self.process.pid and fields[0] != "Z":
                children.append(int(stat.parent.name))
        return children


def _read_banner(process: subprocess.Popen[str]) -> str:
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("Ctrl-C stops everything"):
            return "".join(lines)
    raise AssertionError("tollgate up printed no banner:\n" + "".join(lines))


def _ignore_sigint() -> None:
    # What a shell does to a background job: the job starts with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "extproc", "up", "--demo", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env=env,
        preexec_fn=_ignore_sigint,
    )
    try:
        yield Up(process, port)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _gone(pids: list[int], timeout_s: float = 15) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(Path(f"/proc/{pid}").exists() for pid in pids):
            return True
        time.sleep(0.1)
    return False


def test_up_answers_the_banner_example_and_ctrl_c_stops_everything(up) -> None:
    status, answer = up.chat()
    children = up.child_pids()

    up.process.send_signal(signal.SIGINT)
    code = up.process.wait(timeout=30)

    assert (200, "chat.completion") == (status, answer["object"])
    assert 3 == len(children), "Redis, the ext_proc server and Envoy"
    assert 0 == code
    assert _gone(children)


def test_up_stops_the_rest_when_a_child_dies(up) -> None:
    envoy = next(
        pid
        for pid in up.child_pids()
        if "envoy" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    )
    others = [pid for pid in up.child_pids() if pid != envoy]

    os.kill(envoy, signal.SIGKILL)
    code = up.process.wait(timeout=30)
    said = up.process.stdout.read()

    assert 1 == code
    assert "Envoy exited on its own" in said
    assert _gone(others)
