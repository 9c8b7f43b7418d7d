"""Calendar periods: which one ``now`` falls in and when it ends.

Boundaries are local midnights in the policy's time zone, so a day across a
daylight-saving change lasts 23 or 25 hours, as people expect.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo


def current_period(kind: str, now: datetime, zone: str) -> tuple[str, int]:
    """The period id of ``now`` and the ms timestamp at which it ends.

    ``kind`` is day, week (ISO, from Monday), month or quarter; ``now`` must
    be timezone-aware.
    """
    tz = ZoneInfo(zone)
    today = now.astimezone(tz).date()
    start, end = _bounds(kind, today)

    period_id = f"{kind}:{start.isoformat()}"
    ends_at = datetime.combine(end, time(0), tzinfo=tz)
    return period_id, int(ends_at.timestamp() * 1000)


def _bounds(kind: str, today: date) -> tuple[date, date]:
    if kind == "day":
        return today, today + timedelta(days=1)
    if kind == "week":
        start = today - timedelta(days=today.weekday())
        return start, start + timedelta(days=7)
    if kind == "month":
        start = today.replace(day=1)
        return start, _add_months(start, 1)
    if kind == "quarter":
        start = today.replace(month=(today.month - 1) // 3 * 3 + 1, day=1)
        return start, _add_months(start, 3)
    raise ValueError(f"unknown period {kind!r}")


def _add_months(first_of_month: date, months: int) -> date:
    index = first_of_month.month - 1 + months
    return first_of_month.replace(
        year=first_of_month.year + index // 12, month=index % 12 + 1
    )
