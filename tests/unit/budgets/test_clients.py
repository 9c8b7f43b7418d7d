"""Redis errors become StoreUnavailable, saying whether the command may have run."""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError, ResponseError, TimeoutError

from extproc.budgets.clients import store_errors
from extproc.errors import StoreUnavailable


def _raised(error: Exception) -> StoreUnavailable:
    with pytest.raises(StoreUnavailable) as caught, store_errors("testing"):
        raise error
    return caught.value


def test_a_timed_out_command_may_have_run() -> None:
    assert True is _raised(TimeoutError("Timeout reading")).maybe_applied


@pytest.mark.parametrize(
    "error", [ConnectionError("Connection refused"), ResponseError("NOSCRIPT")]
)
def test_a_command_refused_or_never_sent_did_not_run(error: Exception) -> None:
    assert False is _raised(error).maybe_applied
