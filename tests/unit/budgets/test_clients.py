"""Redis errors become StoreUnavailable, saying whether the command may have run."""

from __future__ import annotations

import pytest
from redis.exceptions import (
    ConnectionError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TimeoutError,
)

from extproc.budgets.clients import (
    answered_with_error,
    async_client,
    redacted_url,
    store_errors,
    sync_client,
)
from extproc.errors import ConfigError, StoreUnavailable


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


@pytest.mark.parametrize(
    "reply",
    [
        ReadOnlyError(
            "You can't write against a read only replica.", status_code="READONLY"
        ),
        OutOfMemoryError(
            "command not allowed when used memory > 'maxmemory'.", status_code="OOM"
        ),
        ResponseError("MISCONF Redis is configured to save RDB snapshots"),
        ResponseError("Redis is busy running a script.", status_code="BUSY"),
        NoPermissionError(
            "this user has no permissions to run the 'evalsha' command",
            status_code="NOPERM",
        ),
    ],
)
def test_a_state_of_the_server_is_not_an_error_of_one_command(
    reply: Exception,
) -> None:
    assert False is answered_with_error(_raised(reply))


def test_an_error_of_one_script_run_is_its_own() -> None:
    reply = ResponseError("user_script:12: bad argument", status_code="ERR")

    assert True is answered_with_error(_raised(reply))


def test_an_error_reply_is_quoted_in_the_reason() -> None:
    reply = ReadOnlyError(
        "You can't write against a read only replica.", status_code="READONLY"
    )

    assert (
        "redis refused while testing: READONLY You can't write against a read "
        "only replica." == str(_raised(reply))
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("rediss://:p%40ss@r.example:6380/0", "rediss://:***@r.example:6380/0"),
        ("redis://app:pw@r:6379/2", "redis://app:***@r:6379/2"),
        ("redis://r:6379/0?password=pw&db=1", "redis://r:6379/0?password=***&db=1"),
        ("unix:///run/redis.sock?db=3", "unix:///run/redis.sock?db=3"),
    ],
)
def test_a_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert shown == redacted_url(url)


@pytest.mark.parametrize("make", [async_client, sync_client])
def test_a_sentinel_url_is_a_configuration_error(make) -> None:
    with pytest.raises(ConfigError, match="Sentinel URLs are not supported") as bad:
        make("redis+sentinel://:pw@sentinel:26379/mymaster")

    assert ":***@" in str(bad.value)
