"""Which budgets and rate limits apply to a caller, as Redis buckets.

Scopes, narrowest first: the user, the user with this tool, the tool
overall, the project, the team, the organisation. Each may carry a budget
(USD) and rate limits (requests and tokens per minute). A reservation holds
on all of them at once or on none.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from extproc.budgets.periods import current_period
from extproc.budgets.store import UNIT_REQUESTS, UNIT_TOKENS, BucketSpec
from extproc.policy.model import Budget, Limits, Policy

MINUTE_MS = 60_000
DEFAULT_USER = "default"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling, and where they belong."""

    identity: str
    team: str | None = None
    project: str | None = None
    tool: str | None = None


def caller_for(policy: Policy, identity: str, tool: str | None) -> Caller:
    """The caller ``identity`` as the policy's directory places it."""
    member = policy.directory.get(identity)
    return Caller(
        identity=identity,
        team=member.team if member else None,
        project=member.project if member else None,
        tool=tool,
    )


def buckets_for(policy: Policy, caller: Caller, now: datetime) -> list[BucketSpec]:
    """Every bucket that applies to ``caller`` at ``now``, narrowest first."""
    buckets: list[BucketSpec] = []
    for scope, limits in _scopes(policy, caller):
        buckets += _limit_buckets(scope, limits, policy.timezone, now)
    return buckets


def _scopes(policy: Policy, caller: Caller) -> list[tuple[str, Limits]]:
    user = policy.users.get(caller.identity) or policy.users.get(DEFAULT_USER)
    scopes = [(f"user:{caller.identity}", user)]
    tool = policy.tools.limits.get(caller.tool or "")
    if tool is not None:
        scopes.append((f"user:{caller.identity}/tool:{caller.tool}", tool.per_user))
        scopes.append((f"tool:{caller.tool}", tool.overall))
    if caller.project:
        scopes.append(
            (f"project:{caller.project}", policy.projects.get(caller.project))
        )
    if caller.team:
        scopes.append((f"team:{caller.team}", policy.teams.get(caller.team)))
    scopes.append(("org", policy.organisation))
    return [(scope, limits) for scope, limits in scopes if limits is not None]


def _limit_buckets(
    scope: str, limits: Limits, zone: str, now: datetime
) -> list[BucketSpec]:
    buckets = []
    if limits.budget is not None:
        buckets.append(budget_bucket(scope, limits.budget, zone, now))
    rates = limits.rate_limits
    if rates is not None and rates.requests_per_minute:
        buckets.append(
            _per_minute(f"{scope}#rpm", rates.requests_per_minute, UNIT_REQUESTS)
        )
    if rates is not None and rates.tokens_per_minute:
        buckets.append(
            _per_minute(f"{scope}#tpm", rates.tokens_per_minute, UNIT_TOKENS)
        )
    return buckets


def budget_bucket(scope: str, budget: Budget, zone: str, now: datetime) -> BucketSpec:
    """The bucket of one scope's budget at ``now``."""
    shared = {
        "scope": scope,
        "capacity": budget.capacity_micro_usd,
        "soft_limits": tuple(sorted(budget.soft_limits_percent)),
        "downgrade_models": tuple(sorted(budget.downgrade_models.items())),
        "downgrade_at_percent": budget.downgrade_at_percent,
    }
    if budget.period is None:
        return BucketSpec(
            **shared,
            refill=budget.refill_micro_usd,
            refill_period_ms=budget.refill_period_ms,
        )
    period_id, ends_at_ms = current_period(budget.period, now, zone)
    return BucketSpec(**shared, period_id=period_id, resets_at_ms=ends_at_ms)


def _per_minute(scope: str, per_minute: int, unit: str) -> BucketSpec:
    return BucketSpec(
        scope=scope,
        capacity=per_minute,
        refill=per_minute,
        refill_period_ms=MINUTE_MS,
        unit=unit,
    )
