"""A journal belongs to one process: replay rewrites the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from extproc.budgets.journal import Journal
from extproc.errors import ConfigError


def test_a_second_owner_of_a_journal_is_refused_after_waiting(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    first = Journal(path, max_bytes=1 << 20)

    with pytest.raises(ConfigError, match="TOLLGATE_JOURNAL_PATH"):
        Journal(path, max_bytes=1 << 20, lock_wait_s=0.2)

    first.close()


def test_a_closed_journal_can_be_taken_by_the_next_owner(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    Journal(path, max_bytes=1 << 20).close()

    successor = Journal(path, max_bytes=1 << 20, lock_wait_s=0.2)

    assert 0 == successor.depth
    successor.close()


def test_journals_at_different_paths_do_not_wait_for_each_other(
    tmp_path: Path,
) -> None:
    first = Journal(tmp_path / "a.jsonl", max_bytes=1 << 20, lock_wait_s=0)
    second = Journal(tmp_path / "b.jsonl", max_bytes=1 << 20, lock_wait_s=0)

    assert (0, 0) == (first.depth, second.depth)
    first.close()
    second.close()
