"""Calendar periods in the policy's time zone, across daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from extproc.budgets.periods import current_period


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


@pytest.mark.parametrize(
    ("kind", "now", "expected_id", "ends"),
    [
        (
            "day",
            "2027-03-14T12:00:00+00:00",
            "day:2027-03-14",
            "2027-03-15T00:00:00+00:00",
        ),
        (
            "week",
            "2027-03-14T12:00:00+00:00",
            "week:2027-03-08",
            "2027-03-15T00:00:00+00:00",
        ),
        (
            "month",
            "2027-12-31T23:59:00+00:00",
            "month:2027-12-01",
            "2028-01-01T00:00:00+00:00",
        ),
        (
            "quarter",
            "2027-05-20T00:00:00+00:00",
            "quarter:2027-04-01",
            "2027-07-01T00:00:00+00:00",
        ),
    ],
)
def test_period_id_and_end_in_utc(kind, now, expected_id, ends) -> None:
    period_id, ends_at_ms = current_period(kind, datetime.fromisoformat(now), "UTC")

    assert (expected_id, _ms(ends)) == (period_id, ends_at_ms)


def test_local_midnight_decides_the_day_not_utc() -> None:
    now = datetime(2027, 3, 31, 22, 30, tzinfo=UTC)  # 00:30 on 1 April in Berlin

    period_id, _ = current_period("month", now, "Europe/Berlin")

    assert "month:2027-04-01" == period_id


def test_day_of_spring_forward_lasts_23_hours() -> None:
    now = datetime(2027, 3, 28, 10, 0, tzinfo=UTC)  # Berlin switches to CEST today

    _, ends_at_ms = current_period("day", now, "Europe/Berlin")

    assert _ms("2027-03-28T22:00:00+00:00") == ends_at_ms


def test_day_of_fall_back_lasts_25_hours() -> None:
    now = datetime(2027, 10, 31, 12, 0, tzinfo=UTC)  # Berlin returns to CET today

    _, ends_at_ms = current_period("day", now, "Europe/Berlin")

    assert _ms("2027-10-31T23:00:00+00:00") == ends_at_ms


def test_month_boundary_in_a_zone_west_of_utc() -> None:
    now = datetime(2027, 11, 1, 3, 0, tzinfo=UTC)  # still 31 October in New York

    period_id, ends_at_ms = current_period("month", now, "America/New_York")

    assert ("month:2027-10-01", _ms("2027-11-01T04:00:00+00:00")) == (
        period_id,
        ends_at_ms,
    )
