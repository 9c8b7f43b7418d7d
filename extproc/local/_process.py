"""Child-process plumbing shared by the Envoy and Redis runners."""

from __future__ import annotations

import contextlib
import logging
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Self

logger = logging.getLogger(__name__)

LOG_TAIL_LINES = 40


class Started:
    """A process (or server) run as a context manager: ``with`` starts it,
    leaving the block stops it. Subclasses define ``start`` and ``stop``."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class Child(Started):
    """A ``Started`` that runs one child process, kept in ``_process``."""

    _process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        """True while the child process has not exited."""
        return self._process is not None and self._process.poll() is None


def spawn(
    argv: list[str],
    log_path: Path,
    *,
    cwd: Path,
    stdout_path: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` with stderr appended to ``log_path``.

    stdout goes to ``stdout_path`` when given, else to ``log_path`` as well.
    ``env`` replaces the environment when given (else it is inherited). The
    child inherits no stdin, so a process waiting for input cannot hang a
    test run.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as files:
        log_file = files.enter_context(log_path.open("ab"))
        out_file = (
            files.enter_context(stdout_path.open("ab")) if stdout_path else log_file
        )
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out_file,
            stderr=log_file,
            env=None if env is None else dict(env),
        )

    logger.debug("spawned pid=%d argv=%s", process.pid, argv)
    return process


def terminate(process: subprocess.Popen[bytes], *, timeout_s: float) -> int:
    """End ``process``: SIGTERM, then SIGKILL if it outlives ``timeout_s``.

    Returns the exit code. Safe to call on a process that already exited.
    """
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            logger.warning(
                "process ignored SIGTERM, killing pid=%d timeout_s=%s",
                process.pid,
                timeout_s,
            )
            process.kill()
            process.wait()

    return process.returncode


def log_tail(log_path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """Return the last ``lines`` lines of a log file, or a note if unreadable."""
    try:
        text = log_path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        return f"(no log at {log_path}: {error})"

    return "\n".join(text.splitlines()[-lines:])
