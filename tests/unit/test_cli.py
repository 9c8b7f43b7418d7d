"""The tollgate command line refuses arguments that make no sense."""

from __future__ import annotations

from pathlib import Path

import pytest

from extproc.cli import main

DEMO_POLICY = Path(__file__).resolve().parents[2] / "extproc/local/demo_policy.yaml"


@pytest.mark.parametrize("days", ["-1", "0", "seven"])
def test_spend_refuses_a_window_of_no_days(
    days: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["spend", "--days", days])

    assert 2 == stopped.value.code
    assert "--days" in capsys.readouterr().err


def test_spend_names_an_unreachable_redis_without_its_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TOLLGATE_REDIS_URL", "redis://:hunter2@127.0.0.1:1/0")
    monkeypatch.setenv("TOLLGATE_POLICY_FILE", str(DEMO_POLICY))

    code = main(["spend"])

    err = capsys.readouterr().err
    assert (1, False) == (code, "hunter2" in err)
