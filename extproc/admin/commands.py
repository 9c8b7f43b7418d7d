"""The ``tollgate keys`` and ``tollgate budget`` commands.

``add_admin_commands`` registers them on the ``tollgate`` parser's
subcommands; each sets ``handler`` to ``keys_command`` or ``budget_command``,
which read the settings (Redis URL, policy file) like ``tollgate spend``,
act through ``extproc.keys`` and ``extproc.budgets.admin``, and print.

    tollgate keys issue --user alice [--tool claude-code] [--expires-in 30d]
    tollgate keys list [--format table|json]
    tollgate keys revoke KEY_ID
    tollgate budget set SCOPE --capacity-usd 50 [--refill-usd 10 --refill-every 1d]
    tollgate budget set SCOPE --amount-usd 300 --period month [--soft-limit 80 100]
    tollgate budget unset SCOPE
    tollgate budget show SCOPE [--format table|json]
    tollgate budget list [--format table|json]

An invalid argument prints one line and exits 2; Redis not answering
(``StoreUnavailable``) is left to ``tollgate``'s own error handling.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from extproc.budgets.admin import BudgetView
from extproc.keys import KeyRecord
from extproc.money import format_usd
from extproc.policy.model import Budget

if TYPE_CHECKING:
    from extproc.budgets.clients import SyncClient
    from extproc.policy import Policy

EXIT_USAGE = 2


def add_admin_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``keys`` and ``budget`` on ``tollgate``'s subcommands."""
    _add_keys(commands)
    _add_budget(commands)


def keys_command(args: argparse.Namespace) -> int:
    """Run ``tollgate keys ACTION``; returns the exit code."""
    from extproc import keys

    client, policy = _context()
    tenant = policy.tenant
    try:
        if args.keys_action == "issue":
            expires_in_ms = _duration(args.expires_in) if args.expires_in else None
            key, record = keys.issue_key(
                client, tenant, args.user, args.tool, expires_in_ms=expires_in_ms
            )
            print(key)
            print(
                f"issued key {record.key_id} for {record.identity}; this is the only "
                "time the key is shown",
                file=sys.stderr,
            )
        elif args.keys_action == "list":
            _print_keys(keys.list_keys(client, tenant), args.format)
        elif not keys.revoke_key(client, tenant, args.key_id):
            print(f"tollgate: no key has the id {args.key_id}", file=sys.stderr)
            return 1
        else:
            print(
                f"revoked key {args.key_id}; gateways refuse it once their key "
                f"cache runs out ({keys.DEFAULT_CACHE_TTL_S:g} s by default)"
            )
    except ValueError as exc:
        print(f"tollgate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def budget_command(args: argparse.Namespace) -> int:
    """Run ``tollgate budget ACTION``; returns the exit code."""
    from extproc.budgets import admin

    client, policy = _context()
    tenant, zone = policy.tenant, policy.timezone
    try:
        if args.budget_action == "set":
            budget = admin.parse_budget(_budget_values(args))
            shift = admin.set_override(
                client, tenant, args.scope, budget, timezone=zone
            )
            view = admin.budget_view(client, tenant, args.scope, policy)
            _print_views([view], "table")
            if shift:
                print(f"the bucket's level moved by {format_usd(shift)} USD")
        elif args.budget_action == "unset":
            fallback = admin.policy_budget(policy, admin.check_scope(args.scope))
            if not admin.remove_override(
                client, tenant, args.scope, fallback=fallback, timezone=zone
            ):
                print(f"{args.scope} has no override", file=sys.stderr)
        elif args.budget_action == "show":
            view = admin.budget_view(client, tenant, args.scope, policy)
            _print_views([view], args.format)
        else:
            _print_views(admin.list_budget_views(client, tenant, policy), args.format)
    except ValueError as exc:
        print(f"tollgate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def describe_budget(budget: Budget | None) -> str:
    """One line for a budget: ``300.000000 USD per month, soft limits 80%``."""
    if budget is None:
        return "none"
    amount = format_usd(budget.capacity_micro_usd)
    if budget.period is not None:
        text = f"{amount} USD per {budget.period}"
    else:
        text = f"{amount} USD capacity"
        if budget.refill_micro_usd:
            text += (
                f", refilled {format_usd(budget.refill_micro_usd)} USD every "
                f"{budget.refill_every}"
            )
    if budget.soft_limits_percent:
        text += ", soft limits " + ", ".join(
            f"{p}%" for p in sorted(budget.soft_limits_percent)
        )
    return text


def view_as_dict(view: BudgetView) -> dict[str, Any]:
    """A ``BudgetView`` as JSON-ready values (money in micro-USD)."""

    def dump(budget: Budget | None) -> dict[str, Any] | None:
        return None if budget is None else budget.model_dump(mode="json")

    bucket = view.bucket
    return {
        "scope": view.scope,
        "source": view.source,
        "effective": dump(view.effective),
        "policy": dump(view.policy),
        "override": dump(view.override),
        "level_now_micro_usd": view.level_now_micro_usd,
        "bucket": None
        if bucket is None
        else {
            "level_micro_usd": bucket.level_micro_usd,
            "capacity_micro_usd": bucket.capacity_micro_usd,
            "period": bucket.period,
            "updated_ms": bucket.updated_ms,
        },
    }


def key_as_dict(record: KeyRecord, now_ms: int) -> dict[str, Any]:
    """A key record as JSON-ready values, with its status at ``now_ms``."""
    return {
        "key_id": record.key_id,
        "identity": record.identity,
        "tool": record.tool,
        "created_ms": record.created_ms,
        "expires_ms": record.expires_ms,
        "revoked_ms": record.revoked_ms,
        "status": record.status(now_ms),
    }


# Parsers.


def _add_keys(commands: argparse._SubParsersAction) -> None:
    keys = commands.add_parser("keys", help="issue, list and revoke gateway keys")
    actions = keys.add_subparsers(title="actions", dest="keys_action", required=True)

    issue = actions.add_parser("issue", help="issue a key; it is printed once")
    issue.add_argument("--user", required=True, help="the identity the key stands for")
    issue.add_argument("--tool", help="bind the key to one tool, e.g. claude-code")
    issue.add_argument(
        "--expires-in",
        metavar="DURATION",
        help="lifetime such as 30d or 12h; default: no expiry",
    )

    listing = actions.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("--format", choices=("table", "json"), default="table")

    revoke = actions.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id", help="the id `keys list` shows")
    keys.set_defaults(handler=keys_command)


def _add_budget(commands: argparse._SubParsersAction) -> None:
    budget = commands.add_parser(
        "budget", help="override and inspect the budget of a scope"
    )
    actions = budget.add_subparsers(
        title="actions", dest="budget_action", required=True
    )
    scope_help = (
        "user:NAME, team:NAME, project:NAME, tool:NAME, user:NAME/tool:NAME or org"
    )

    setter = actions.add_parser("set", help="override the policy's budget of a scope")
    setter.add_argument("scope", help=scope_help)
    kind = setter.add_mutually_exclusive_group(required=True)
    kind.add_argument("--capacity-usd", metavar="USD", help="a refilled bucket's size")
    kind.add_argument("--amount-usd", metavar="USD", help="a calendar budget's amount")
    setter.add_argument(
        "--refill-usd", metavar="USD", help="regained every --refill-every"
    )
    setter.add_argument("--refill-every", metavar="DURATION", help="default 1d")
    setter.add_argument(
        "--period",
        choices=("day", "week", "month", "quarter"),
        help="the calendar budget's period",
    )
    setter.add_argument(
        "--soft-limit",
        metavar="PERCENT",
        type=int,
        nargs="+",
        action="extend",
        default=[],
        help="spend levels reported once per period",
    )

    unset = actions.add_parser("unset", help="remove a scope's override")
    unset.add_argument("scope", help=scope_help)

    show = actions.add_parser("show", help="the budget in force and its bucket now")
    show.add_argument("scope", help=scope_help)
    show.add_argument("--format", choices=("table", "json"), default="table")

    listing = actions.add_parser(
        "list", help="every scope with a bucket or an override"
    )
    listing.add_argument("--format", choices=("table", "json"), default="table")
    budget.set_defaults(handler=budget_command)


# Acting.


def _context() -> tuple[SyncClient, Policy]:
    from extproc.budgets.clients import sync_client
    from extproc.policy import load_policy
    from extproc.settings import Settings

    settings = Settings()
    policy = load_policy(settings.policy_file)
    # TOLLGATE_REDIS_CLUSTER: read once it is a field of Settings.
    cluster = bool(getattr(settings, "redis_cluster", False))
    return sync_client(settings.effective_redis_url, cluster=cluster), policy


def _budget_values(args: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {"soft_limits_percent": list(args.soft_limit)}
    if args.capacity_usd is not None:
        if args.period is not None:
            raise ValueError("--period belongs to a calendar budget (--amount-usd)")
        values["capacity_usd"] = args.capacity_usd
        if args.refill_usd is not None:
            values["refill_usd"] = args.refill_usd
        if args.refill_every is not None:
            values["refill_every"] = args.refill_every
        return values
    if args.refill_usd is not None or args.refill_every is not None:
        raise ValueError("--refill-usd and --refill-every belong to --capacity-usd")
    values["amount_usd"] = args.amount_usd
    values["period"] = args.period
    return values


def _duration(text: str) -> int:
    from extproc.policy.model import duration_ms

    return duration_ms(text)


# Printing.


def _print_keys(records: list[KeyRecord], fmt: str) -> None:
    now_ms = int(time.time() * 1000)
    if fmt == "json":
        print(json.dumps([key_as_dict(r, now_ms) for r in records], indent=2))
        return
    header = ("key_id", "identity", "tool", "created", "expires", "status")
    lines = [header] + [
        (
            r.key_id,
            r.identity,
            r.tool or "-",
            _when(r.created_ms),
            _when(r.expires_ms),
            r.status(now_ms),
        )
        for r in records
    ]
    print(_columns(lines))


def _print_views(views: list[BudgetView], fmt: str) -> None:
    if fmt == "json":
        print(json.dumps([view_as_dict(v) for v in views], indent=2))
        return
    header = (
        "scope",
        "source",
        "budget",
        "level_now_usd",
        "stored_level_usd",
        "period",
    )
    lines = [header] + [
        (
            v.scope,
            v.source,
            describe_budget(v.effective),
            "-" if v.level_now_micro_usd is None else format_usd(v.level_now_micro_usd),
            "-" if v.bucket is None else format_usd(v.bucket.level_micro_usd),
            (v.bucket.period if v.bucket else "") or "-",
        )
        for v in views
    ]
    print(_columns(lines))


def _columns(lines: list[tuple[str, ...]]) -> str:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
        for line in lines
    )


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
