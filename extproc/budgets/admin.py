"""Budget overrides set at run time, and a look at a scope's live bucket.

An operator can give one scope a budget other than the policy's without
editing the policy file: ``set_override`` stores the policy's own ``Budget``
model, as JSON, in the tenant's hash ``tg:{tenant}:budget-overrides`` (field:
the scope name). Gateways read the whole hash at every policy poll
(``OverrideBook.refresh``) and ``apply_overrides`` puts the overrides into a
caller's buckets: an override replaces the policy's budget of its scope, and
adds a budget to a scope that applies to the caller but has none in the
policy.

Scope names are those of ``extproc.budgets.scopes``: ``user:alice``,
``user:alice/tool:claude-code``, ``tool:claude-code``, ``project:search``,
``team:platform``, ``org``. Rate limits (``#rpm``, ``#tpm``) are not
overridden here.

Changing a scope's capacity moves its live bucket's level by the change, in
the same Lua call that stores the override, so that what was spent stays
spent: raising a monthly budget from 300 to 500 USD mid-month gives 200 USD
more at once, and lowering it takes as much away. A budget that switches
kind (refilled to calendar or back, or another period) starts afresh
instead, as the reservation script does at a period change.

Functions taking a blocking client raise ``ValueError`` for an invalid scope
or budget and ``StoreUnavailable`` when Redis does not answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from extproc.budgets.clients import AsyncClient, SyncClient, store_errors
from extproc.budgets.scopes import DEFAULT_USER, Caller, budget_bucket
from extproc.budgets.store import BucketSpec, Keys
from extproc.errors import StoreUnavailable
from extproc.policy.model import Budget, Limits, Policy

log = logging.getLogger(__name__)

RATE_SUFFIXES = ("#rpm", "#tpm")
MAX_NAME_CHARS = 256
_TOOL_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")  # as identity.tool_from
_KINDS = ("user", "team", "project", "tool")

# KEYS[1]   overrides hash          tg:{t}:budget-overrides
# KEYS[2]   the scope's bucket hash tg:{t}:bucket:<scope>
# ARGV[1]   scope
# ARGV[2]   the override as JSON; '' removes the scope's override
# ARGV[3]   capacity of the budget in force from now on, in the bucket's unit;
#           '' leaves the bucket alone (no budget applies any more)
# ARGV[4]   that budget's calendar period id now ('' for a refilled bucket)
# Returns   {changed, shift}: changed is 1 when the override hash changed;
#           shift is what the bucket's level moved by (0 when the bucket does
#           not exist or is of another period, which then starts afresh)
REBASE = """
local changed = 1
if ARGV[2] == '' then
  changed = redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end

local shift = 0
if ARGV[3] ~= '' then
  local state = redis.call('HMGET', KEYS[2], 'cap', 'period', 'level')
  local cap = tonumber(state[1])
  if cap ~= nil and state[3] and (state[2] or '') == ARGV[4] then
    shift = tonumber(ARGV[3]) - cap
    redis.call('HINCRBY', KEYS[2], 'level', shift)
    redis.call('HSET', KEYS[2], 'cap', ARGV[3])
  end
end
return {changed, shift}
"""


@dataclass(frozen=True, slots=True)
class BucketState:
    """A budget bucket as Redis holds it (see ``extproc.budgets.scripts``)."""

    level_micro_usd: int
    capacity_micro_usd: int
    period: str
    updated_ms: int

    def level_at(self, spec: BucketSpec, now_ms: int) -> int:
        """The level a reservation at ``now_ms`` would start from.

        Mirrors the reservation script: a new calendar period, and a budget
        of another kind, starts full; a refilled bucket regains
        ``spec.refill`` per period, pro rata, up to the capacity.
        """
        if spec.period_id != self.period:
            return spec.capacity
        level = self.level_micro_usd
        if not spec.period_id and spec.refill > 0 and now_ms > self.updated_ms:
            added = (now_ms - self.updated_ms) * spec.refill // spec.refill_period_ms
            level = min(spec.capacity, level + added)
        return min(level, spec.capacity)


@dataclass(frozen=True, slots=True)
class BudgetView:
    """One scope's budgets and bucket, as ``budget show`` prints them.

    ``level_now_micro_usd`` is what the bucket holds now under the budget in
    force (None when no budget applies); a scope without a bucket yet would
    start full.
    """

    scope: str
    policy: Budget | None
    override: Budget | None
    bucket: BucketState | None
    level_now_micro_usd: int | None

    @property
    def effective(self) -> Budget | None:
        return self.override if self.override is not None else self.policy

    @property
    def source(self) -> str:
        """``override``, ``policy`` or ``none``."""
        if self.override is not None:
            return "override"
        return "policy" if self.policy is not None else "none"


def overrides_hash(tenant: str) -> str:
    """The Redis hash of the tenant's overrides: ``tg:{tenant}:budget-overrides``."""
    return f"{Keys(tenant).prefix}budget-overrides"


def check_scope(scope: str) -> str:
    """``scope`` if it names a budget scope, else ``ValueError`` saying why."""
    _parse_scope(scope)
    return scope


def policy_budget(policy: Policy, scope: str) -> Budget | None:
    """The budget the policy gives ``scope``, or None."""
    kind, name, tool = _parse_scope(scope)
    limits: Limits | None = None
    if kind == "org":
        limits = policy.organisation
    elif kind == "user":
        limits = policy.users.get(name) or policy.users.get(DEFAULT_USER)
    elif kind == "team":
        limits = policy.teams.get(name)
    elif kind == "project":
        limits = policy.projects.get(name)
    elif kind == "tool" and name in policy.tools.limits:
        limits = policy.tools.limits[name].overall
    elif kind == "user/tool" and tool in policy.tools.limits:
        limits = policy.tools.limits[tool].per_user

    return limits.budget if limits is not None else None


def parse_budget(values: Mapping[str, object]) -> Budget:
    """A ``Budget`` from the policy file's keys; ``ValueError`` naming the fault."""
    try:
        return Budget.model_validate(dict(values))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, error['loc'])) or 'budget'}: {error['msg']}"
            for error in exc.errors()
        )
        raise ValueError(f"invalid budget: {problems}") from None


# Administration, on a blocking client.


def set_override(
    client: SyncClient,
    tenant: str,
    scope: str,
    budget: Budget,
    *,
    timezone: str = "UTC",
    now: datetime | None = None,
) -> int:
    """Store ``budget`` as the override of ``scope`` and rebase its bucket.

    ``timezone`` is the policy's (calendar periods). Returns what the
    bucket's level moved by, in micro-USD.
    """
    check_scope(scope)
    spec = budget_bucket(scope, budget, timezone, now or datetime.now(UTC))

    _, shift = _rebase(client, tenant, scope, budget.model_dump_json(), spec)

    log.info(
        "budget override set",
        extra={"tenant": tenant, "scope": scope, "level_shift_micro_usd": shift},
    )
    return shift


def remove_override(
    client: SyncClient,
    tenant: str,
    scope: str,
    *,
    fallback: Budget | None,
    timezone: str = "UTC",
    now: datetime | None = None,
) -> bool:
    """Remove the override of ``scope``; False when it had none.

    ``fallback`` is the policy's budget of the scope, which applies again;
    the bucket is rebased to it. With none, the bucket is left as it is.
    """
    check_scope(scope)
    spec = (
        None
        if fallback is None
        else budget_bucket(scope, fallback, timezone, now or datetime.now(UTC))
    )

    changed, shift = _rebase(client, tenant, scope, "", spec)

    if changed:
        log.info(
            "budget override removed",
            extra={"tenant": tenant, "scope": scope, "level_shift_micro_usd": shift},
        )
    return bool(changed)


def read_overrides(client: SyncClient, tenant: str) -> dict[str, Budget]:
    """Every stored override; unreadable ones are logged and left out."""
    with store_errors("reading budget overrides"):
        raw = client.hgetall(overrides_hash(tenant))
    return _parsed_overrides(tenant, raw)


def budget_view(
    client: SyncClient,
    tenant: str,
    scope: str,
    policy: Policy,
    now: datetime | None = None,
) -> BudgetView:
    """The budgets of ``scope`` (policy, override) and its bucket now."""
    check_scope(scope)
    now = now or datetime.now(UTC)
    with store_errors("reading a budget"):
        raw_override = client.hget(overrides_hash(tenant), scope)
        raw_bucket = client.hgetall(Keys(tenant).bucket(scope))
    overrides = _parsed_overrides(tenant, {scope: raw_override} if raw_override else {})

    return _view(scope, policy, overrides.get(scope), _bucket_state(raw_bucket), now)


def list_budget_views(
    client: SyncClient,
    tenant: str,
    policy: Policy,
    now: datetime | None = None,
) -> list[BudgetView]:
    """Every scope with a budget bucket or an override, sorted by name."""
    now = now or datetime.now(UTC)
    keys = Keys(tenant)
    prefix = keys.bucket("")
    with store_errors("listing budgets"):
        names = [
            _text(k)
            for k in client.scan_iter(match=_glob_escape(prefix) + "*", count=1000)
        ]
        overrides = read_overrides(client, tenant)
        scopes = sorted({n[len(prefix) :] for n in names} | set(overrides))
        scopes = [s for s in scopes if not s.endswith(RATE_SUFFIXES)]
        reads = client.pipeline(transaction=False)
        for scope in scopes:
            reads.hgetall(keys.bucket(scope))
        buckets = reads.execute() if scopes else []

    return [
        _view(scope, policy, overrides.get(scope), _bucket_state(raw), now)
        for scope, raw in zip(scopes, buckets, strict=True)
    ]


# The request path: overrides in force, applied to a caller's buckets.


async def load_overrides(client: AsyncClient, tenant: str) -> dict[str, Budget]:
    """Every stored override of ``tenant``, read with one HGETALL.

    An override that no longer validates is logged and left out rather than
    failing the refresh. Raises ``StoreUnavailable`` when Redis does not
    answer.
    """
    with store_errors("reading budget overrides"):
        raw = await client.hgetall(overrides_hash(tenant))
    return _parsed_overrides(tenant, raw)


class OverrideBook:
    """The overrides in force, shared by every ``Runtime`` of a process.

    ``current`` is replaced whole by ``refresh``, never changed in place, so
    a request reads one consistent set. A failed refresh keeps the last set.
    """

    def __init__(self) -> None:
        self.current: Mapping[str, Budget] = {}

    async def refresh(self, client: AsyncClient, tenant: str) -> bool:
        """Reload the overrides of ``tenant``; False (and the last set kept)
        when Redis does not answer."""
        try:
            overrides = await load_overrides(client, tenant)
        except StoreUnavailable as exc:
            log.warning(
                "budget overrides not refreshed; keeping the last ones",
                extra={"tenant": tenant, "reason": str(exc)},
            )
            return False
        self.current = overrides
        return True

    async def refresh_forever(
        self, client: AsyncClient, tenant_of: Callable[[], str], interval_ms: int
    ) -> None:
        """Refresh every ``interval_ms`` until cancelled."""
        while True:
            await self.refresh(client, tenant_of())
            await asyncio.sleep(interval_ms / 1000)


def scopes_of(caller: Caller) -> list[str]:
    """Every budget scope that can apply to ``caller``, narrowest first,
    whether or not the policy gives it a budget."""
    identity, tool = caller.identity, caller.tool
    scopes = [f"user:{identity}"]
    if tool:
        scopes += [f"user:{identity}/tool:{tool}", f"tool:{tool}"]
    if caller.project:
        scopes.append(f"project:{caller.project}")
    if caller.team:
        scopes.append(f"team:{caller.team}")

    return scopes + ["org"]


def apply_overrides(
    buckets: list[BucketSpec],
    caller: Caller,
    overrides: Mapping[str, Budget],
    timezone: str,
    now: datetime,
) -> list[BucketSpec]:
    """``buckets`` (from ``scopes.buckets_for``) with ``overrides`` applied.

    An override replaces the budget bucket of its scope, or adds one where
    the scope applies to ``caller`` but the policy gives it no budget. Rate
    limits stay as they are. The order stays narrowest first, each scope's
    budget before its rate limits.
    """
    if not overrides:
        return buckets
    groups: dict[str, list[BucketSpec]] = {}
    for bucket in buckets:
        groups.setdefault(_base_scope(bucket.scope), []).append(bucket)
    order = scopes_of(caller)
    order += [scope for scope in groups if scope not in order]

    applied: list[BucketSpec] = []
    for scope in order:
        group = groups.get(scope, [])
        override = overrides.get(scope)
        if override is not None:
            rates = [b for b in group if b.scope != scope]
            group = [budget_bucket(scope, override, timezone, now), *rates]
        applied += group

    return applied


# Helpers.


def _parse_scope(scope: str) -> tuple[str, str, str | None]:
    """(kind, name, tool) of a scope name; ValueError when it is not one."""
    if scope == "org":
        return "org", "", None
    if scope.startswith("user:") and "/tool:" in scope:
        name, _, tool = scope[len("user:") :].rpartition("/tool:")
        _check_name(scope, name)
        _check_tool(scope, tool)
        return "user/tool", name, tool
    kind, sep, name = scope.partition(":")
    if not sep or kind not in _KINDS:
        raise ValueError(
            f"{scope!r} is not a budget scope; use user:NAME, team:NAME, "
            "project:NAME, tool:NAME, user:NAME/tool:NAME or org"
        )
    _check_name(scope, name)
    if kind == "tool":
        _check_tool(scope, name)
    return kind, name, None


def _check_name(scope: str, name: str) -> None:
    if not name or len(name) > MAX_NAME_CHARS or not name.isprintable() or "#" in name:
        raise ValueError(
            f"{scope!r}: a name is printable text of 1 to {MAX_NAME_CHARS} "
            "characters without '#'"
        )


def _check_tool(scope: str, tool: str) -> None:
    if not _TOOL_NAME.fullmatch(tool):
        raise ValueError(
            f"{scope!r}: a tool name is 1 to 64 of letters, digits, '.', '_', '-'"
        )


def _base_scope(scope: str) -> str:
    return scope[:-4] if scope.endswith(RATE_SUFFIXES) else scope


def _rebase(
    client: SyncClient,
    tenant: str,
    scope: str,
    override_json: str,
    spec: BucketSpec | None,
) -> tuple[int, int]:
    keys = [overrides_hash(tenant), Keys(tenant).bucket(scope)]
    args = [
        scope,
        override_json,
        "" if spec is None else spec.capacity,
        "" if spec is None else spec.period_id,
    ]
    with store_errors("storing a budget override"):
        changed, shift = client.register_script(REBASE)(keys=keys, args=args)
    return int(changed), int(shift)


def _view(
    scope: str,
    policy: Policy,
    override: Budget | None,
    bucket: BucketState | None,
    now: datetime,
) -> BudgetView:
    view = BudgetView(scope, policy_budget(policy, scope), override, bucket, None)
    effective = view.effective
    if effective is None:
        return view

    spec = budget_bucket(scope, effective, policy.timezone, now)
    now_ms = int(now.timestamp() * 1000)
    level = bucket.level_at(spec, now_ms) if bucket is not None else spec.capacity
    return BudgetView(scope, view.policy, override, bucket, level)


def _bucket_state(raw: Mapping[bytes | str, bytes | str]) -> BucketState | None:
    fields = {_text(k): _text(v) for k, v in raw.items()}
    if "level" not in fields:
        return None
    return BucketState(
        level_micro_usd=int(fields["level"]),
        capacity_micro_usd=int(fields.get("cap") or 0),
        period=fields.get("period", ""),
        updated_ms=int(fields.get("ts") or 0),
    )


def _parsed_overrides(
    tenant: str, raw: Mapping[bytes | str, bytes | str]
) -> dict[str, Budget]:
    overrides: dict[str, Budget] = {}
    for field, value in raw.items():
        scope = _text(field)
        try:
            check_scope(scope)
            overrides[scope] = Budget.model_validate(json.loads(value))
        except (ValueError, ValidationError) as exc:
            log.warning(
                "unreadable budget override ignored",
                extra={"tenant": tenant, "scope": scope, "reason": str(exc)},
            )
    return overrides


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
