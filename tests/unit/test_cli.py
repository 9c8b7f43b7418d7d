"""The tollgate command line refuses arguments that make no sense."""

from __future__ import annotations

import pytest

from extproc.cli import main


@pytest.mark.parametrize("days", ["-1", "0", "seven"])
def test_spend_refuses_a_window_of_no_days(
    days: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["spend", "--days", days])

    assert 2 == stopped.value.code
    assert "--days" in capsys.readouterr().err
