"""The admin gRPC API, ``tollgate.admin.v1.Admin``: budgets, keys, spend.

Off unless the process is told where to listen. Every call must carry the
metadata ``authorization: Bearer <token>``; ``BearerTokenInterceptor``
compares it with the configured token in constant time (SHA-256 digests of
both, ``hmac.compare_digest``) and answers anything else UNAUTHENTICATED
before a method runs. The port is plaintext gRPC: bind it to loopback or to
a network that mTLS already protects.

The methods call the blocking admin functions of ``extproc.keys``,
``extproc.budgets.admin`` and ``extproc.spend`` in a worker thread
(``asyncio.to_thread``), so the event loop of the ext_proc server sharing
the process never waits on Redis here. This module is the one place where
their errors become gRPC statuses:

    ValueError (bad scope, budget, duration, day)  INVALID_ARGUMENT, its words
    no key with that id                            NOT_FOUND
    StoreUnavailable                               UNAVAILABLE
    anything else                                  INTERNAL, generic; logged
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import grpc

from extproc import keys
from extproc.admin._gen import admin_pb2 as pb
from extproc.admin._gen import admin_pb2_grpc as pb_grpc
from extproc.admin.spend_views import group_spend
from extproc.budgets import admin
from extproc.budgets.clients import SyncClient, store_errors, sync_client
from extproc.budgets.store import SPEND_RETENTION_S
from extproc.errors import ConfigError, StoreUnavailable
from extproc.policy.model import Budget, Policy, duration_ms
from extproc.spend import read_spend

log = logging.getLogger(__name__)

MIN_TOKEN_CHARS = 16
MAX_SPEND_DAYS = SPEND_RETENTION_S // 86_400
SERVICE_NAME = "tollgate.admin.v1.Admin"

_PERIODS = {
    "day": pb.PERIOD_DAY,
    "week": pb.PERIOD_WEEK,
    "month": pb.PERIOD_MONTH,
    "quarter": pb.PERIOD_QUARTER,
}
_SOURCES = {
    "none": pb.BUDGET_SOURCE_NONE,
    "policy": pb.BUDGET_SOURCE_POLICY,
    "override": pb.BUDGET_SOURCE_OVERRIDE,
}
_DIMENSIONS = {
    pb.DIMENSION_DAY: "day",
    pb.DIMENSION_IDENTITY: "identity",
    pb.DIMENSION_TEAM: "team",
    pb.DIMENSION_PROJECT: "project",
    pb.DIMENSION_TOOL: "tool",
    pb.DIMENSION_PROVIDER: "provider",
    pb.DIMENSION_MODEL: "model",
}
_MICRO = Decimal(1_000_000)

Reply = TypeVar("Reply")


async def start_admin_server(
    *,
    listen: str,
    token: str,
    redis_url: str,
    policy_of: Callable[[], Policy],
    redis_cluster: bool = False,
) -> grpc.aio.Server:
    """Start the admin API on ``listen`` (``host:port``) and return the server.

    ``policy_of`` returns the policy in force (its tenant, time zone and
    budgets). Stop it with ``await server.stop(grace)``; its Redis client is
    closed once the server has stopped. Raises ``ConfigError`` for a token
    shorter than ``MIN_TOKEN_CHARS`` or an address that cannot be bound, and
    ``StoreUnavailable`` when ``redis_cluster`` and no node answers.
    """
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"the admin API token must have at least {MIN_TOKEN_CHARS} characters"
        )
    client = sync_client(redis_url, cluster=redis_cluster)
    # No port sharing: a second server on a taken port must fail, not split
    # the calls with the first.
    server = grpc.aio.server(
        interceptors=[BearerTokenInterceptor(token)], options=[("grpc.so_reuseport", 0)]
    )
    pb_grpc.add_AdminServicer_to_server(AdminService(client, policy_of), server)

    try:
        bound = server.add_insecure_port(listen)
    except RuntimeError as exc:
        raise ConfigError(f"the admin API cannot listen on {listen}") from exc
    if bound == 0:
        raise ConfigError(f"the admin API cannot listen on {listen}")
    await server.start()

    _close_after_stop(server, client)
    log.info("tollgate admin API serving", extra={"listen": listen})
    return server


def read_token_file(path: Path) -> str:
    """The admin token in ``path`` (surrounding whitespace removed)."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the admin token file {path}: {exc}") from exc
    if not token:
        raise ConfigError(f"the admin token file {path} is empty")
    return token


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Lets a call through only with ``authorization: Bearer <token>``."""

    def __init__(self, token: str) -> None:
        self._digest = _digest(token)
        self._refusal = grpc.unary_unary_rpc_method_handler(_unauthenticated)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        if self._authorised(handler_call_details.invocation_metadata or ()):
            return await continuation(handler_call_details)
        log.warning(
            "admin call refused: no valid bearer token",
            extra={"method": handler_call_details.method},
        )
        return self._refusal

    def _authorised(self, metadata: Any) -> bool:
        presented = next(
            (value for key, value in metadata if key == "authorization"), ""
        )
        if isinstance(presented, bytes):
            presented = presented.decode("latin-1")
        scheme, _, token = presented.partition(" ")
        # Digests of equal length, so that the comparison's time says nothing
        # about the token, not even its length.
        matches = hmac.compare_digest(_digest(token.strip()), self._digest)
        return scheme.lower() == "bearer" and matches


class AdminService(pb_grpc.AdminServicer):
    """The ``Admin`` methods over one blocking Redis client."""

    def __init__(self, client: SyncClient, policy_of: Callable[[], Policy]) -> None:
        self._redis = client
        self._policy_of = policy_of

    async def SetBudget(
        self, request: pb.SetBudgetRequest, context: Any
    ) -> pb.BudgetStatus:
        return await self._answer(context, self._set_budget, request)

    async def GetBudget(
        self, request: pb.GetBudgetRequest, context: Any
    ) -> pb.BudgetStatus:
        return await self._answer(context, self._get_budget, request)

    async def DeleteBudget(
        self, request: pb.DeleteBudgetRequest, context: Any
    ) -> pb.DeleteBudgetResponse:
        return await self._answer(context, self._delete_budget, request)

    async def ListBudgets(
        self, request: pb.ListBudgetsRequest, context: Any
    ) -> pb.ListBudgetsResponse:
        return await self._answer(context, self._list_budgets, request)

    async def IssueKey(
        self, request: pb.IssueKeyRequest, context: Any
    ) -> pb.IssueKeyResponse:
        return await self._answer(context, self._issue_key, request)

    async def ListKeys(
        self, request: pb.ListKeysRequest, context: Any
    ) -> pb.ListKeysResponse:
        return await self._answer(context, self._list_keys, request)

    async def RevokeKey(
        self, request: pb.RevokeKeyRequest, context: Any
    ) -> pb.RevokeKeyResponse:
        return await self._answer(context, self._revoke_key, request)

    async def GetSpend(
        self, request: pb.GetSpendRequest, context: Any
    ) -> pb.GetSpendResponse:
        return await self._answer(context, self._get_spend, request)

    # Each method's work, run in a worker thread; None means NOT_FOUND.

    def _set_budget(
        self, policy: Policy, request: pb.SetBudgetRequest
    ) -> pb.BudgetStatus:
        budget = budget_from_proto(request.budget)
        admin.set_override(
            self._redis, policy.tenant, request.scope, budget, timezone=policy.timezone
        )
        return self._get_budget(policy, request)

    def _get_budget(self, policy: Policy, request: Any) -> pb.BudgetStatus:
        view = admin.budget_view(self._redis, policy.tenant, request.scope, policy)
        return status_to_proto(view)

    def _delete_budget(
        self, policy: Policy, request: pb.DeleteBudgetRequest
    ) -> pb.DeleteBudgetResponse:
        fallback = admin.policy_budget(policy, admin.check_scope(request.scope))
        deleted = admin.remove_override(
            self._redis,
            policy.tenant,
            request.scope,
            fallback=fallback,
            timezone=policy.timezone,
        )
        return pb.DeleteBudgetResponse(deleted=deleted)

    def _list_budgets(self, policy: Policy, request: Any) -> pb.ListBudgetsResponse:
        views = admin.list_budget_views(self._redis, policy.tenant, policy)
        return pb.ListBudgetsResponse(budgets=[status_to_proto(v) for v in views])

    def _issue_key(
        self, policy: Policy, request: pb.IssueKeyRequest
    ) -> pb.IssueKeyResponse:
        expires_in_ms = duration_ms(request.expires_in) if request.expires_in else None
        key, record = keys.issue_key(
            self._redis,
            policy.tenant,
            request.identity,
            request.tool or None,
            expires_in_ms=expires_in_ms,
        )
        return pb.IssueKeyResponse(key=key, record=key_to_proto(record))

    def _list_keys(self, policy: Policy, request: Any) -> pb.ListKeysResponse:
        records = keys.list_keys(self._redis, policy.tenant)
        return pb.ListKeysResponse(keys=[key_to_proto(r) for r in records])

    def _revoke_key(
        self, policy: Policy, request: pb.RevokeKeyRequest
    ) -> pb.RevokeKeyResponse | None:
        if not keys.revoke_key(self._redis, policy.tenant, request.key_id):
            return None
        record = keys.find_key(self._redis, policy.tenant, request.key_id)
        return pb.RevokeKeyResponse(record=key_to_proto(record)) if record else None

    def _get_spend(
        self, policy: Policy, request: pb.GetSpendRequest
    ) -> pb.GetSpendResponse:
        first = _day(request.first_day, "first_day")
        last = _day(request.last_day, "last_day")
        if last < first or last - first >= timedelta(days=MAX_SPEND_DAYS):
            raise ValueError(
                f"give first_day <= last_day, at most {MAX_SPEND_DAYS} days apart"
            )
        by = [_dimension(value) for value in request.by]

        with store_errors("reading spend"):
            rows = read_spend(self._redis, policy.tenant, first, last)
        groups = group_spend(rows, by)

        return pb.GetSpendResponse(
            groups=[_spend_group(g, by) for g in groups],
            total_cost_micro_usd=sum(g["cost_micro_usd"] for g in groups),
        )

    async def _answer(
        self, context: Any, work: Callable[[Policy, Any], Reply | None], request: Any
    ) -> Reply:
        policy = self._policy_of()
        try:
            reply = await asyncio.to_thread(work, policy, request)
        except Exception as exc:  # every error becomes a status here
            code, message = _status_for(exc)
            await context.abort(code, message)
        if reply is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no key has that id")
        return reply


def _status_for(exc: Exception) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, ValueError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, StoreUnavailable):
        log.warning("admin call failed: store unavailable", extra={"reason": str(exc)})
        return grpc.StatusCode.UNAVAILABLE, "the budget store did not answer; try again"
    log.error("admin call failed", exc_info=exc)
    return grpc.StatusCode.INTERNAL, "internal error"


# Conversions between the policy's models and the API's messages.


def budget_to_proto(budget: Budget) -> pb.Budget:
    soft = sorted(budget.soft_limits_percent)
    if budget.period is not None:
        calendar = pb.CalendarBudget(
            amount_micro_usd=budget.capacity_micro_usd, period=_PERIODS[budget.period]
        )
        return pb.Budget(calendar=calendar, soft_limits_percent=soft)
    refilled = pb.RefilledBudget(
        capacity_micro_usd=budget.capacity_micro_usd,
        refill_micro_usd=budget.refill_micro_usd,
        refill_every=budget.refill_every,
    )
    return pb.Budget(refilled=refilled, soft_limits_percent=soft)


def budget_from_proto(message: pb.Budget) -> Budget:
    """The policy's ``Budget`` for ``message``; ``ValueError`` when invalid."""
    kind = message.WhichOneof("kind")
    values: dict[str, Any] = {"soft_limits_percent": list(message.soft_limits_percent)}
    if kind == "refilled":
        refilled = message.refilled
        values["capacity_usd"] = _usd(refilled.capacity_micro_usd)
        values["refill_usd"] = _usd(refilled.refill_micro_usd)
        values["refill_every"] = refilled.refill_every or "1d"
    elif kind == "calendar":
        periods = {number: name for name, number in _PERIODS.items()}
        if message.calendar.period not in periods:
            raise ValueError("a calendar budget needs a period")
        values["amount_usd"] = _usd(message.calendar.amount_micro_usd)
        values["period"] = periods[message.calendar.period]
    else:
        raise ValueError("a budget is either refilled or calendar")

    return admin.parse_budget(values)


def status_to_proto(view: admin.BudgetView) -> pb.BudgetStatus:
    status = pb.BudgetStatus(scope=view.scope, source=_SOURCES[view.source])
    if view.effective is not None:
        status.effective.CopyFrom(budget_to_proto(view.effective))
    if view.policy is not None:
        status.policy.CopyFrom(budget_to_proto(view.policy))
    if view.override is not None:
        status.override.CopyFrom(budget_to_proto(view.override))
    if view.bucket is not None:
        status.bucket.CopyFrom(
            pb.BucketState(
                level_micro_usd=view.bucket.level_micro_usd,
                level_now_micro_usd=view.level_now_micro_usd or 0,
                capacity_micro_usd=view.bucket.capacity_micro_usd,
                period=view.bucket.period,
                updated_ms=view.bucket.updated_ms,
            )
        )
    return status


def key_to_proto(record: keys.KeyRecord) -> pb.KeyRecord:
    now_ms = int(time.time() * 1000)
    message = pb.KeyRecord(
        key_id=record.key_id,
        identity=record.identity,
        tool=record.tool or "",
        created_ms=record.created_ms,
        active=record.active(now_ms),
    )
    if record.expires_ms is not None:
        message.expires_ms = record.expires_ms
    if record.revoked_ms is not None:
        message.revoked_ms = record.revoked_ms
    return message


def _spend_group(group: dict[str, Any], by: list[str]) -> pb.SpendGroup:
    return pb.SpendGroup(
        dimensions={name: str(group[name]) for name in by},
        requests=group["requests"],
        input_tokens=group["input_tokens"],
        output_tokens=group["output_tokens"],
        cost_micro_usd=group["cost_micro_usd"],
        estimated_cost_micro_usd=group["estimated_cost_micro_usd"],
    )


def _dimension(value: int) -> str:
    if value not in _DIMENSIONS:
        raise ValueError("a spend dimension must be given (DIMENSION_UNSPECIFIED)")
    return _DIMENSIONS[value]


def _day(text: str, field: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{field} is a day such as 2027-03-01, not {text!r}") from None


def _usd(micro_usd: int) -> str:
    return str(Decimal(micro_usd) / _MICRO)


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


async def _unauthenticated(request: Any, context: Any) -> None:
    await context.abort(
        grpc.StatusCode.UNAUTHENTICATED,
        "this call needs the metadata authorization: Bearer <token>",
    )


_STOPPERS: set[asyncio.Task[None]] = set()


def _close_after_stop(server: grpc.aio.Server, client: SyncClient) -> None:
    async def close() -> None:
        await server.wait_for_termination()
        client.close()

    task = asyncio.get_running_loop().create_task(close())
    _STOPPERS.add(task)
    task.add_done_callback(_STOPPERS.discard)
