"""The report commands: ``tollgate bill`` and ``tollgate spend --html``.

Each takes the argparse namespace of its command and returns the exit code:
0 on success, 1 when spend cannot be read, 2 for a bad argument. A policy
that cannot be loaded raises its ``PolicyError``, which the CLI prints.

Spend days are UTC days, as the ledger books them.
"""

from __future__ import annotations

import argparse
import calendar
import sys
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path

from extproc.reports.bill import bill_csv, build_bill, check_month
from extproc.reports.html import DIMENSIONS, render_html
from extproc.spend import SpendRow

# A report reads up to a few hundred spend hashes: allow more than the
# request path's Redis timeout, which is tuned for Envoy's message deadline.
REPORT_REDIS_TIMEOUT_S = 10.0


def bill_command(args: argparse.Namespace) -> int:
    """Write the bill of ``args.month`` (``YYYY-MM``) as ``args.format``
    (``csv`` or ``html``) to ``args.output`` (a path; ``-`` or None for
    standard output). Optional ``args.currency`` and ``args.rate`` (units of
    that currency per USD) convert the amounts."""
    try:
        year, month = check_month(args.month)
        currency, rate = _currency(args)
    except ValueError as exc:
        return _usage_error(str(exc))
    fmt = getattr(args, "format", "csv") or "csv"
    if fmt not in ("csv", "html"):
        return _usage_error(f"format must be csv or html, not {fmt!r}")
    first = date(year, month, 1)
    last = date(year, month, calendar.monthrange(year, month)[1])

    rows = _read_spend(first, last)
    if rows is None:
        return 1

    bill = build_bill(rows, args.month)
    if fmt == "html":
        text = render_html(
            rows,
            dimension="team",
            title=f"Tollgate bill {args.month}",
            currency=currency,
            rate=rate,
            bill=bill,
            first=first,
            last=last,
        )
    else:
        text = bill_csv(bill, currency=currency, rate=rate)
    _write(text, getattr(args, "output", None))

    return 0


def html_command(args: argparse.Namespace) -> int:
    """Write the spend page of the last ``args.days`` UTC days, stacked by
    ``args.dimension``, to the file ``args.html``."""
    days = getattr(args, "days", 30) or 30
    dimension = getattr(args, "dimension", "team") or "team"
    if days < 1:
        return _usage_error("--days must be at least 1")
    if dimension not in DIMENSIONS:
        return _usage_error(f"dimension must be one of {', '.join(DIMENSIONS)}")
    try:
        currency, rate = _currency(args)
    except ValueError as exc:
        return _usage_error(str(exc))
    last = datetime.now(UTC).date()
    first = last - timedelta(days=days - 1)

    rows = _read_spend(first, last)
    if rows is None:
        return 1

    page = render_html(
        rows,
        dimension=dimension,
        title=f"Tollgate spend, last {days} days",
        currency=currency,
        rate=rate,
        first=first,
        last=last,
    )
    _write(page, args.html)
    print(
        f"wrote {args.html}: {len(rows)} spend rows, {first} to {last}", file=sys.stderr
    )

    return 0


def _read_spend(first: date, last: date) -> list[SpendRow] | None:
    """Spend rows from the configured Redis, or None after printing why not."""
    import redis

    from extproc.budgets.clients import redacted_url
    from extproc.policy import load_policy
    from extproc.settings import Settings
    from extproc.spend import read_spend

    settings = Settings()
    tenant = load_policy(settings.policy_file).tenant
    client = redis.Redis.from_url(
        settings.effective_redis_url, socket_timeout=REPORT_REDIS_TIMEOUT_S
    )
    try:
        return read_spend(client, tenant, first, last)
    except redis.RedisError as exc:
        print(
            f"tollgate: cannot read spend from "
            f"{redacted_url(settings.effective_redis_url)}: {exc}",
            file=sys.stderr,
        )
        return None
    finally:
        client.close()


def _currency(args: argparse.Namespace) -> tuple[str, Decimal]:
    """The currency asked for on the command line, else the policy's."""
    if getattr(args, "currency", None) is None and getattr(args, "rate", None) is None:
        return _policy_currency()
    currency = (getattr(args, "currency", None) or "USD").strip().upper()
    raw = getattr(args, "rate", None)
    try:
        rate = Decimal(str(raw)) if raw is not None else Decimal(1)
    except InvalidOperation:
        raise ValueError(f"rate must be a decimal number, not {raw!r}") from None
    if not rate.is_finite() or rate <= 0:
        raise ValueError(f"rate must be a positive number, not {raw!r}")
    if currency == "USD" and rate != 1:
        raise ValueError("a rate other than 1 needs a currency other than USD")
    return currency, rate


def _policy_currency() -> tuple[str, Decimal]:
    from extproc.policy import load_policy
    from extproc.settings import Settings

    settings = Settings()
    if not settings.policy_file.exists():
        return "USD", Decimal(1)
    currency = load_policy(settings.policy_file).currency
    return currency.code.upper(), currency.per_usd


def _write(text: str, output: str | None) -> None:
    if output in (None, "-"):
        sys.stdout.write(text)
        return
    Path(output).write_text(text, encoding="utf-8")


def _usage_error(message: str) -> int:
    print(f"tollgate: {message}", file=sys.stderr)
    return 2
