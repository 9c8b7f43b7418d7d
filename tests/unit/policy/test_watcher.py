"""Policy reload: a good file takes effect, a bad one is refused."""

from __future__ import annotations

import os
from pathlib import Path

from extproc.policy import PolicyWatcher

GOOD = """\
providers:
  openai: {family: openai, route_prefix: /openai}
users:
  default: {budget: {capacity_usd: "%s"}}
"""


def _write(path: Path, text: str, tick: int) -> None:
    path.write_text(text)
    os.utime(path, ns=(tick * 10**9, tick * 10**9))


def _capacity(watcher: PolicyWatcher) -> int:
    return watcher.current.users["default"].budget.capacity_micro_usd


def test_changed_file_takes_effect(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    _write(path, GOOD % "1", 1)
    watcher = PolicyWatcher(path, lambda policy: policy)

    _write(path, GOOD % "2", 2)

    assert (True, 2_000_000) == (watcher.check(), _capacity(watcher))


def test_unchanged_file_is_not_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    _write(path, GOOD % "1", 1)
    watcher = PolicyWatcher(path, lambda policy: policy)

    assert watcher.check() is False


def test_invalid_new_file_is_refused_and_old_policy_stays(
    tmp_path: Path, caplog
) -> None:
    path = tmp_path / "policy.yaml"
    _write(path, GOOD % "1", 1)
    watcher = PolicyWatcher(path, lambda policy: policy)

    _write(path, GOOD.replace("family", "famliy") % "5", 2)

    assert (False, 1_000_000) == (watcher.check(), _capacity(watcher))
    assert "policy reload refused" in caplog.text


def test_deleted_file_keeps_the_policy_in_force(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    _write(path, GOOD % "1", 1)
    watcher = PolicyWatcher(path, lambda policy: policy)

    path.unlink()

    assert (False, 1_000_000) == (watcher.check(), _capacity(watcher))
