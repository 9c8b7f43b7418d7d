"""``python -m extproc.probe``, the tollgate container's exec probe; the
SERVING case runs against the real server in test_egress_gateway."""

from __future__ import annotations

from pathlib import Path

import pytest

from extproc import probe


def test_probe_fails_when_nothing_listens(tmp_path: Path) -> None:
    assert 1 == probe.main([f"unix:{tmp_path / 'none.sock'}", "--timeout-s", "1"])


def test_probe_defaults_to_the_servers_own_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    address = f"unix:{tmp_path / 'configured.sock'}"
    monkeypatch.setenv("TOLLGATE_GRPC_LISTEN", address)

    code = probe.main(["--timeout-s", "1"])

    assert 1 == code
    assert capsys.readouterr().err.startswith(f"{address}: UNREACHABLE")
