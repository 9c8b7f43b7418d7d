"""The budget store: reservation and settlement in Redis, one call each.

``reserve`` holds an estimate against every bucket that applies, or raises
``BudgetExceeded`` naming the bucket that refused and holds nothing.
``settle`` replaces a reservation with the metered cost exactly once: a
repeated settlement of the same request id changes nothing. A reservation
that is never settled is charged at its estimate by ``settle_expired_leases``
once its lease has run out.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from extproc.budgets.clients import AsyncClient, store_errors
from extproc.budgets.scripts import RESERVE, SETTLE
from extproc.errors import BadRequest, BudgetExceeded, RateLimited, StoreUnavailable
from extproc.money import format_money

log = logging.getLogger(__name__)

SETTLED_MARKER_TTL_S = 7 * 86_400
SPEND_RETENTION_S = 400 * 86_400
LEDGER_MAX_ENTRIES = 1_000_000
IN_FLIGHT_RETRY_S = 2  # retry-after when calls in flight hold what is missing
# Lua numbers are doubles: integers are exact, and written back as integers,
# only up to here. No real call's estimate comes near it.
MAX_EXACT_AMOUNT = 2**53 - 1


UNIT_MICRO_USD = "micro_usd"
UNIT_REQUESTS = "requests"
UNIT_TOKENS = "tokens"


@dataclass(frozen=True, slots=True)
class BucketSpec:
    """One budget or rate limit that applies to a call.

    ``scope`` names the owner and kind (``user:alice``, ``team:platform``,
    ``user:alice#rpm``); ``unit`` is what the bucket counts. A refilled
    bucket holds at most ``capacity`` and regains ``refill`` every
    ``refill_period_ms``, pro rata. A calendar bucket (``period_id`` set)
    starts full in each period and is empty until ``resets_at_ms`` once
    spent. ``soft_limits`` are percents of capacity whose crossing is
    reported once per period.
    """

    scope: str
    capacity: int
    refill: int = 0
    refill_period_ms: int = 86_400_000
    unit: str = UNIT_MICRO_USD
    period_id: str = ""
    resets_at_ms: int | None = None
    soft_limits: tuple[int, ...] = ()
    # Policy that the flow applies, not the store: cheaper models to switch
    # to past ``downgrade_at_percent`` of the capacity or instead of a refusal.
    downgrade_models: tuple[tuple[str, str], ...] = ()
    downgrade_at_percent: int | None = None

    def downgrade(self, model: str | None) -> str | None:
        """The cheaper model this budget sends ``model`` to, if any."""
        return dict(self.downgrade_models).get(model or "")

    def past_downgrade_level(self, level: int) -> bool:
        """Whether spend at ``level`` has reached the downgrade threshold."""
        if self.downgrade_at_percent is None or self.capacity <= 0:
            return False
        return (
            self.capacity - level
        ) * 100 >= self.downgrade_at_percent * self.capacity

    def hold(self, estimate_micro_usd: int, estimate_tokens: int) -> int:
        """What one call holds on this bucket before it runs."""
        if self.unit == UNIT_REQUESTS:
            return 1
        if self.unit == UNIT_TOKENS:
            return estimate_tokens
        return estimate_micro_usd

    def used(self, settlement: Settlement) -> int:
        """What one call used of this bucket; -1 for what it held."""
        if settlement.cost_micro_usd < 0 or self.unit == UNIT_REQUESTS:
            return -1
        if self.unit == UNIT_TOKENS:
            return settlement.input_tokens + settlement.output_tokens
        return settlement.cost_micro_usd


@dataclass(frozen=True, slots=True)
class Attribution:
    """Who and what a call's spend is booked to.

    ``SPEND_DIMENSIONS`` is the order the dimensions take in a spend field;
    an empty string means the dimension does not apply (no team, no tool).
    """

    identity: str
    provider: str
    model: str
    team: str = ""
    project: str = ""
    tool: str = ""
    labels: tuple[tuple[str, str], ...] = ()  # custom attribution, key=value

    SPEND_DIMENSIONS = ("identity", "team", "project", "tool", "provider", "model")

    def spend_prefix(self) -> str:
        return json.dumps([getattr(self, name) for name in self.SPEND_DIMENSIONS]) + "|"

    def label_prefixes(self) -> list[str]:
        """Spend field prefixes of the custom attribution labels."""
        return [json.dumps(["label", key, value]) + "|" for key, value in self.labels]

    def as_dict(self) -> dict[str, Any]:
        values: dict[str, Any] = {n: getattr(self, n) for n in self.SPEND_DIMENSIONS}
        if self.labels:
            values["labels"] = dict(self.labels)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Attribution:
        """Rebuild from ``as_dict`` output; missing or odd values become ''."""
        fields = {name: str(values.get(name) or "") for name in cls.SPEND_DIMENSIONS}
        fields["model"] = fields["model"] or "unknown"
        labels = values.get("labels")
        pairs = (
            tuple(sorted((str(k), str(v)) for k, v in labels.items()))
            if isinstance(labels, dict)
            else ()
        )
        return cls(**fields, labels=pairs)


@dataclass(frozen=True, slots=True)
class Settlement:
    """The outcome of one call, ready to be booked."""

    request_id: str
    cost_micro_usd: int
    input_tokens: int
    output_tokens: int
    estimated: bool
    outcome: str
    detail: dict[str, Any]


class Keys:
    """Key names of one tenant; every key carries the tenant's hash tag."""

    def __init__(self, tenant: str) -> None:
        self.prefix = f"tg:{{{tenant}}}:"

    def bucket(self, scope: str) -> str:
        return f"{self.prefix}bucket:{scope}"

    def reservation(self, request_id: str) -> str:
        return f"{self.prefix}resv:{request_id}"

    def settled(self, request_id: str) -> str:
        return f"{self.prefix}settled:{request_id}"

    @property
    def leases(self) -> str:
        return f"{self.prefix}leases"

    @property
    def ledger(self) -> str:
        return f"{self.prefix}ledger"

    @property
    def events(self) -> str:
        return f"{self.prefix}events"

    def spend(self, day: str) -> str:
        return f"{self.prefix}spend:{day}"


class BudgetStore:
    """Reservations and settlements of one tenant against one Redis."""

    def __init__(
        self,
        client: AsyncClient,
        tenant: str,
        *,
        lease_ms: int,
        spend_retention_s: int = SPEND_RETENTION_S,
        money: Callable[[int], str] = format_money,
    ) -> None:
        self._money = money  # how refusals show micro-USD to the client
        self._redis = client
        self.keys = Keys(tenant)
        self._lease_ms = lease_ms
        self._spend_retention_s = spend_retention_s
        self._reserve = client.register_script(RESERVE)
        self._settle = client.register_script(SETTLE)

    async def reserve(
        self,
        request_id: str,
        buckets: list[BucketSpec],
        *,
        estimate_micro_usd: int,
        estimate_tokens: int,
        record: dict[str, Any],
        now_ms: int,
    ) -> list[int]:
        """Hold the estimate on every bucket, or on none.

        Returns each bucket's level after the hold, in ``buckets`` order.
        Raises ``BudgetExceeded`` naming the bucket that cannot hold it,
        ``BadRequest`` for an estimate past what the scripts count exactly
        (an absurd ``max_tokens``), and ``StoreUnavailable`` when Redis does
        not answer.
        """
        _check_exact(estimate_micro_usd, estimate_tokens)
        keys = [self.keys.reservation(request_id), self.keys.leases]
        keys += [self.keys.bucket(b.scope) for b in buckets]
        args: list[Any] = [
            now_ms,
            estimate_micro_usd,
            now_ms + self._lease_ms,
            request_id,
            json.dumps({**record, "buckets": [b.scope for b in buckets]}),
        ]
        for bucket in buckets:
            args += [
                bucket.capacity,
                bucket.refill,
                bucket.refill_period_ms,
                bucket.period_id,
                bucket.hold(estimate_micro_usd, estimate_tokens),
            ]

        reply = await self._call(self._reserve, keys, args)

        if reply[0] == -1:
            raise StoreUnavailable(f"reservation {request_id} exists already")
        if reply[0] == 0:
            refused = buckets[int(reply[1]) - 1]
            held = refused.hold(estimate_micro_usd, estimate_tokens)
            in_flight = int(reply[3]) if len(reply) > 3 else 0
            raise _refusal(refused, int(reply[2]), held, now_ms, self._money, in_flight)
        return [int(level) for level in reply[1:]]

    async def settle(
        self,
        settlement: Settlement,
        buckets: list[BucketSpec],
        attribution: Attribution,
        *,
        now: datetime | None = None,
        reserved: bool = True,
    ) -> bool:
        """Book ``settlement``; True if it was booked now, False if the
        request was settled before (or, for a cost of -1, holds nothing).

        ``buckets`` are those the reservation holds, in reservation order. A
        cost of -1 charges what was held (the estimate). ``reserved=False``
        charges a call admitted without a reservation (store unreachable at
        admission); it is idempotent on the request id all the same. A call
        whose reservation Redis lost (a restart without persistence, an
        eviction) is charged its cost all the same, with a warning.
        """
        now = now or datetime.now(UTC)
        day = now.strftime("%Y-%m-%d")
        rid = settlement.request_id
        keys = [
            self.keys.reservation(rid),
            self.keys.leases,
            self.keys.settled(rid),
            self.keys.ledger,
            self.keys.spend(day),
            self.keys.events,
        ] + [self.keys.bucket(b.scope) for b in buckets]
        detail = {**settlement.detail, **attribution.as_dict()}
        args = [
            rid,
            settlement.cost_micro_usd,
            SETTLED_MARKER_TTL_S,
            self._spend_retention_s,
            attribution.spend_prefix(),
            settlement.input_tokens,
            settlement.output_tokens,
            "1" if settlement.estimated else "0",
            LEDGER_MAX_ENTRIES,
            json.dumps(detail, sort_keys=True),
            settlement.outcome,
            int(now.timestamp() * 1000),
            "held" if reserved else "direct",
        ]
        for bucket in buckets:
            used = bucket.used(settlement)
            if not reserved and used < 0:
                used = 1 if bucket.unit == UNIT_REQUESTS else 0
            args += [used, ",".join(map(str, bucket.soft_limits))]
        args += attribution.label_prefixes()

        reply = await self._call(self._settle, keys, args)

        if reply[0] != 1:
            log.info(
                "settlement skipped", extra={"request_id": rid, "reason": reply[1]}
            )
        elif len(reply) > 2:
            log.warning(
                "reservation lost by redis; call charged without it",
                extra={"request_id": rid, "cost_micro_usd": int(reply[1])},
            )
        return reply[0] == 1

    async def release(
        self, request_id: str, buckets: list[BucketSpec], *, now: datetime | None = None
    ) -> bool:
        """Give a reservation back whole, booking no spend: for a call the
        gateway refused after reserving, which never reached the provider.
        True if released now; False if it was settled before or is unknown.
        """
        now = now or datetime.now(UTC)
        keys = [
            self.keys.reservation(request_id),
            self.keys.leases,
            self.keys.settled(request_id),
            self.keys.ledger,
            self.keys.spend(now.strftime("%Y-%m-%d")),
            self.keys.events,
        ] + [self.keys.bucket(b.scope) for b in buckets]
        args: list[Any] = [request_id, 0, SETTLED_MARKER_TTL_S, 0, "", 0, 0, "0"]
        args += [LEDGER_MAX_ENTRIES, "{}", "released", int(now.timestamp() * 1000)]
        args += ["release", *([0, ""] * len(buckets))]

        reply = await self._call(self._settle, keys, args)

        return reply[0] == 1

    async def extend_leases(self, request_ids: list[str], now_ms: int) -> None:
        """Push the lease of each held reservation to ``now_ms`` + the lease.

        One command for all: a process calls this for its calls still in
        flight, so a long stream is not charged at its estimate while it runs.
        Only existing leases move (``XX``) and only forward (``GT``).
        """
        if not request_ids:
            return
        deadline = now_ms + self._lease_ms
        with store_errors("extending leases"):
            await self._redis.zadd(
                self.keys.leases,
                {rid: deadline for rid in request_ids},
                xx=True,
                gt=True,
            )

    async def expired_leases(self, now_ms: int, limit: int = 100) -> list[str]:
        """Request ids whose lease ran out before they were settled."""
        with store_errors("scanning leases"):
            members = await self._redis.zrangebyscore(
                self.keys.leases, "-inf", now_ms, start=0, num=limit
            )
        return [m.decode() if isinstance(m, bytes) else m for m in members]

    async def drop_lease(self, request_id: str) -> None:
        """Forget the lease of ``request_id``, whose reservation is gone."""
        with store_errors("dropping a lease"):
            await self._redis.zrem(self.keys.leases, request_id)

    async def reservation(self, request_id: str) -> dict[str, str] | None:
        """The held reservation of ``request_id``, or None."""
        with store_errors("reading a reservation"):
            raw = await self._redis.hgetall(self.keys.reservation(request_id))
        if not raw:
            return None
        return {_text(k): _text(v) for k, v in raw.items()}

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> list[Any]:
        with store_errors("running a budget script"):
            return await script(keys=keys, args=args)


def _check_exact(estimate_micro_usd: int, estimate_tokens: int) -> None:
    """Refuse an estimate the Lua scripts could not hold exactly: it would
    be stored as a rounded float that no later settlement can charge."""
    if max(estimate_micro_usd, estimate_tokens) > MAX_EXACT_AMOUNT:
        raise BadRequest(
            "this request's estimate is past what any budget can hold; lower max_tokens"
        )


def _refusal(
    bucket: BucketSpec,
    level: int,
    held: int,
    now_ms: int,
    money: Callable[[int], str],
    in_flight: int = 0,
) -> BudgetExceeded:
    """The refusal of a call that would hold ``held`` on ``bucket``, which
    has ``level`` left and ``in_flight`` held by calls still running."""
    kind = BudgetExceeded if bucket.unit == UNIT_MICRO_USD else RateLimited
    if held > bucket.capacity:
        return kind(
            f"this request needs {_amount(bucket, held, money)}, more than the whole "
            f"{_amount(bucket, bucket.capacity, money)} of {bucket.scope}; lower "
            "max_tokens or the input",
            scope=bucket.scope,
            retry_after_s=None,
        )
    retry_after_s = _seconds_until(bucket, held - level, now_ms)
    if bucket.unit == UNIT_MICRO_USD:
        message = (
            f"budget of {bucket.scope} cannot cover this request: estimated "
            f"{money(held)}, available {money(max(level, 0))}"
        )
    else:
        message = (
            f"rate limit of {bucket.scope} reached: this request needs "
            f"{_amount(bucket, held, money)}, {max(level, 0)} left"
        )
    gives_back = bucket.unit != UNIT_REQUESTS  # a request stays counted
    if gives_back and in_flight > 0 and level + in_flight >= held:
        # Calls in flight hold their estimates and give back what they do
        # not use when they end, usually within seconds: waiting for the
        # refill alone would overstate the wait.
        retry_after_s = min(retry_after_s, IN_FLIGHT_RETRY_S)
        message += f" ({_amount(bucket, in_flight, money)} is held by calls in flight)"
    return kind(
        f"{message}; retry in {retry_after_s} s",
        scope=bucket.scope,
        retry_after_s=retry_after_s,
    )


def _amount(bucket: BucketSpec, amount: int, money: Callable[[int], str]) -> str:
    if bucket.unit == UNIT_MICRO_USD:
        return money(amount)
    unit = bucket.unit.removesuffix("s") if amount == 1 else bucket.unit
    return f"{amount} {unit}"


def _seconds_until(bucket: BucketSpec, missing: int, now_ms: int) -> int:
    """When the bucket can hold ``missing`` more; a full period if never."""
    if bucket.period_id and bucket.resets_at_ms is not None:
        return max(1, math.ceil((bucket.resets_at_ms - now_ms) / 1000))
    if bucket.refill <= 0:
        return max(1, math.ceil(bucket.refill_period_ms / 1000))
    wait_ms = missing * bucket.refill_period_ms / bucket.refill
    return max(1, math.ceil(wait_ms / 1000))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
