"""A durable local journal of settlements that Redis could not take.

When Redis is unreachable, a settlement is appended here (one JSON line,
fsync'd) instead of being lost, and replayed into Redis when it answers
again. Replay goes through the same settlement script, which is idempotent
on the request id, so a record replayed twice (a crash mid-replay) still
charges once. The file is bounded: past ``max_bytes`` appends are refused
and the caller decides (the flow then refuses new calls).

A journal belongs to one process at a time: replay rewrites the file, which
would lose what another process appended meanwhile. The journal holds an
exclusive lock on ``PATH.lock`` for its life; a second process given the
same path waits for it (a restart overlapping its predecessor's graceful
stop), then gives up with ``ConfigError``. Several processes on one machine
each need their own ``TOLLGATE_JOURNAL_PATH``.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from extproc.budgets.clients import answered_with_error
from extproc.budgets.store import Attribution, BucketSpec, BudgetStore, Settlement
from extproc.errors import ConfigError, StoreUnavailable, TollgateError

log = logging.getLogger(__name__)

LOCK_WAIT_S = 30.0


class JournalFull(TollgateError):
    """The journal reached its size bound; nothing more is accepted."""


class Journal:
    """Settlements waiting for Redis, in an append-only file."""

    def __init__(
        self, path: Path, *, max_bytes: int, lock_wait_s: float = LOCK_WAIT_S
    ) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._owner = _take_ownership(self.path, lock_wait_s)
        self._depth = len(self._read_lines())
        self._lock = asyncio.Lock()

    def close(self) -> None:
        """Let another process take this journal. Safe to call twice."""
        if not self._owner.closed:
            self._owner.close()

    @property
    def depth(self) -> int:
        """Settlements waiting to be replayed."""
        return self._depth

    def has_room(self) -> bool:
        return self._size() < self.max_bytes

    async def append(
        self,
        settlement: Settlement,
        buckets: list[BucketSpec],
        attribution: Attribution,
        *,
        reserved: bool,
    ) -> None:
        """Write one settlement durably. Raises ``JournalFull`` past the bound."""
        record = {
            "settlement": asdict(settlement),
            "buckets": [asdict(b) for b in buckets],
            "attribution": attribution.as_dict(),
            "reserved": reserved,
        }
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        async with self._lock:
            if self._size() + len(line) > self.max_bytes:
                raise JournalFull(
                    f"journal {self.path} is full ({self.max_bytes} bytes)"
                )
            await asyncio.to_thread(self._append_synced, line)
            self._depth += 1

    async def replay(self, store_of: Any) -> int:
        """Settle every journaled record; keep those Redis did not take.

        ``store_of()`` gives the store of the policy in force; records carry
        their own buckets and attribution. Returns how many records left the
        journal.
        """
        async with self._lock:
            lines = self._read_lines()
            if not lines:
                return 0
            store: BudgetStore = store_of()
            remaining = await _settle_all(store, lines)
            await asyncio.to_thread(self._rewrite, remaining)
            self._depth = len(remaining)
            return len(lines) - len(remaining)

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def _read_lines(self) -> list[str]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if line.strip()]

    def _append_synced(self, line: bytes) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            if not _ends_a_line(fd):
                # A record torn by a crash mid-append stays alone on its
                # line (dropped at replay) instead of swallowing this one.
                line = b"\n" + line
            _write_all(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _rewrite(self, lines: list[str]) -> None:
        temporary = self.path.with_suffix(self.path.suffix + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, "".join(line + "\n" for line in lines).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.path)


def _take_ownership(path: Path, wait_s: float) -> Any:
    """The open lock file of ``path``, locked for this process alone."""
    lock_path = path.with_name(path.name + ".lock")
    owner = open(lock_path, "a")  # noqa: SIM115 - held for the journal's life
    deadline = time.monotonic() + wait_s
    waiting = False
    while True:
        try:
            fcntl.flock(owner.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return owner
        except BlockingIOError:
            if time.monotonic() >= deadline:
                owner.close()
                raise ConfigError(
                    f"journal {path} is held by another tollgate process; give "
                    "each process its own TOLLGATE_JOURNAL_PATH"
                ) from None
            if not waiting:
                log.warning(
                    "journal held by another process; waiting",
                    extra={"path": str(path)},
                )
                waiting = True
            time.sleep(0.1)


def _ends_a_line(fd: int) -> bool:
    """Whether the file is empty or its last byte ends a line."""
    size = os.fstat(fd).st_size
    return size == 0 or os.pread(fd, 1, size - 1) == b"\n"


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``; ``os.write`` may take only part of it."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def _settle_all(store: BudgetStore, lines: list[str]) -> list[str]:
    remaining: list[str] = []
    for index, line in enumerate(lines):
        try:
            record = json.loads(line)
            settlement = Settlement(**record["settlement"])
            buckets = [
                BucketSpec(**{**b, "soft_limits": tuple(b["soft_limits"])})
                for b in record["buckets"]
            ]
            attribution = Attribution.from_dict(record["attribution"])
        except (ValueError, KeyError, TypeError):
            log.error(
                "journal record unreadable; dropped", extra={"record": line[:500]}
            )
            continue
        try:
            await store.settle(
                settlement,
                buckets,
                attribution,
                reserved=bool(record.get("reserved", True)),
            )
        except StoreUnavailable as exc:
            if not answered_with_error(exc):
                return remaining + lines[index:]
            # One record Redis refuses must not hold back the others.
            log.error(
                "journal record refused by redis; kept for the next replay",
                extra={"request_id": settlement.request_id, "reason": str(exc)},
            )
            remaining.append(line)
    return remaining


async def replay_forever(journal: Journal, store_of: Any, interval_ms: int) -> None:
    """Replay the journal every ``interval_ms`` while it holds records."""
    while True:
        await asyncio.sleep(interval_ms / 1000)
        if journal.depth:
            replayed = await journal.replay(store_of)
            if replayed:
                log.warning(
                    "journal replayed into redis",
                    extra={"replayed": replayed, "waiting": journal.depth},
                )
