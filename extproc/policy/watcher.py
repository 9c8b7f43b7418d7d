"""Keeping the policy in force current: reload on change, refuse bad ones."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from extproc.errors import PolicyError
from extproc.policy.loader import load_policy
from extproc.policy.model import Policy

log = logging.getLogger(__name__)

T = TypeVar("T")


class PolicyWatcher(Generic[T]):
    """Holds what was compiled from the policy file and swaps it on change.

    ``compile`` turns a validated ``Policy`` into what requests use. A request
    takes ``current`` once at its start and keeps it, so a reload never
    changes a call halfway. A new file that fails validation is logged and
    refused; the policy in force stays.
    """

    def __init__(self, path: Path, compile: Callable[[Policy], T]) -> None:
        self._path = path
        self._compile = compile
        self._stamp = _stamp(path)
        self.current: T = compile(load_policy(path))

    def check(self) -> bool:
        """Reload if the file changed; True when a new policy took effect."""
        stamp = _stamp(self._path)
        if stamp == self._stamp:
            return False
        self._stamp = stamp

        try:
            compiled = self._compile(load_policy(self._path))
        except PolicyError as exc:
            log.error(
                "policy reload refused; the previous policy stays in force",
                extra={"policy_file": str(self._path), "problems": exc.problems},
            )
            return False

        self.current = compiled
        log.info("policy reloaded", extra={"policy_file": str(self._path)})
        return True

    async def watch(self, interval_ms: int) -> None:
        """Check the file every ``interval_ms`` until cancelled."""
        while True:
            await asyncio.sleep(interval_ms / 1000)
            self.check()


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns)
