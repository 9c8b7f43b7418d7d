"""The tollgate command: run the gateway, inspect spend, manage budgets and keys."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta

from extproc.admin.commands import add_admin_commands
from extproc.errors import TollgateError


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return args.handler(args) or 0
    except TollgateError as exc:
        print(f"tollgate: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tollgate", description=__doc__)
    commands = parser.add_subparsers(title="commands")

    serve = commands.add_parser("serve", help="run the ext_proc gRPC server")
    serve.set_defaults(handler=_serve)

    up = commands.add_parser(
        "up", help="run Redis, the ext_proc server and Envoy locally"
    )
    up.add_argument(
        "--demo",
        action="store_true",
        help="route providers to a local stand-in that replays recorded answers",
    )
    up.add_argument("--port", type=int, default=10000, help="Envoy listener port")
    up.set_defaults(handler=_up)

    spend = commands.add_parser("spend", help="print booked spend")
    spend.add_argument(
        "--days", type=_positive_int, default=7, help="days back from today (UTC)"
    )
    spend.add_argument("--format", choices=("table", "csv", "json"), default="table")
    spend.add_argument(
        "--html",
        metavar="FILE",
        help="write a self-contained HTML report to FILE instead",
    )
    spend.add_argument(
        "--by",
        help="group by any of day, identity, team, project, "
        "tool, provider, model (comma separated)",
    )
    spend.add_argument(
        "--dimension",
        default="team",
        help="what the HTML chart stacks by: team, project, identity, "
        "tool, provider or model",
    )
    spend.set_defaults(handler=_spend)

    bill = commands.add_parser("bill", help="the month's statement by team and project")
    bill.add_argument("--month", required=True, help="YYYY-MM")
    bill.add_argument("--format", choices=("csv", "html"), default="csv")
    bill.add_argument("--output", default="-", help="file to write, - for stdout")
    bill.set_defaults(handler=_bill)

    add_admin_commands(commands)

    usage = commands.add_parser("usage", help="meter and price a saved response body")
    usage.add_argument("file", help="response body file, or - for standard input")
    usage.add_argument("--provider", required=True, help="provider family, e.g. openai")
    usage.add_argument(
        "--path", required=True, help="request path, e.g. /v1/chat/completions"
    )
    usage.add_argument("--model", help="model, when the body does not name it")
    usage.add_argument(
        "--pricing-provider",
        default=None,
        help="genai-prices provider id, as the policy's pricing_provider "
        "(e.g. groq, deepseek) for an openai-compatible server",
    )
    usage.add_argument("--content-type", default=None, help="response content type")
    usage.add_argument("--content-encoding", default="identity")
    usage.add_argument(
        "--status", type=int, default=200, help="HTTP status of the response"
    )
    usage.set_defaults(handler=_usage)
    return parser


def _serve(args: argparse.Namespace) -> int:
    from extproc import logs
    from extproc.server.app import run
    from extproc.settings import Settings

    settings = Settings()
    logs.configure(settings.log_level, settings.log_format)
    run(settings)
    return 0


def _up(args: argparse.Namespace) -> int:
    from extproc.local.up import run_up

    return run_up(demo=args.demo, listen_port=args.port)


def _bill(args: argparse.Namespace) -> int:
    from extproc.reports.commands import bill_command

    return bill_command(args)


def _spend(args: argparse.Namespace) -> int:
    if args.html:
        from extproc.reports.commands import html_command

        return html_command(args)
    from extproc.admin.spend_views import group_spend, parse_by, render_groups
    from extproc.budgets.clients import redacted_url, store_errors, sync_client
    from extproc.errors import StoreUnavailable
    from extproc.policy import load_policy
    from extproc.settings import Settings
    from extproc.spend import read_spend, render

    settings = Settings()
    try:
        by = parse_by(args.by) if args.by else None
    except ValueError as exc:
        print(f"tollgate: {exc}", file=sys.stderr)
        return 2
    policy = load_policy(settings.policy_file)
    tenant = policy.tenant
    last = datetime.now(UTC).date()
    first = last - timedelta(days=max(args.days, 1) - 1)
    try:
        client = sync_client(
            settings.effective_redis_url, cluster=settings.redis_cluster
        )
        with store_errors("reading spend"):
            rows = read_spend(client, tenant, first, last)
    except StoreUnavailable as exc:
        print(
            f"tollgate: cannot read spend from "
            f"{redacted_url(settings.effective_redis_url)}: {exc}",
            file=sys.stderr,
        )
        return 1
    if by:
        print(render_groups(group_spend(rows, by), by, args.format))
    else:
        print(render(rows, args.format, policy.currency))
    return 0


def _positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is less than 1")
    return value


def _usage(args: argparse.Namespace) -> int:
    from extproc.usage_cli import print_report

    print_report(
        file=args.file,
        provider=args.provider,
        path=args.path,
        model=args.model,
        pricing_provider=args.pricing_provider,
        content_type=args.content_type,
        content_encoding=args.content_encoding,
        status=args.status,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
