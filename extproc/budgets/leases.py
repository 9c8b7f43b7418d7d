"""Charging reservations whose call never settled (a killed process)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

from extproc.budgets.clients import answered_with_error
from extproc.budgets.store import Attribution, BucketSpec, BudgetStore, Settlement
from extproc.errors import StoreUnavailable

log = logging.getLogger(__name__)

LEASE_EXPIRED = "lease_expired"


async def settle_expired_leases(
    store: BudgetStore, *, now_ms: int | None = None
) -> int:
    """Charge every reservation whose lease has run out at its estimate.

    Exactly once: a call that settles at the same moment and this sweep both
    go through the settlement script, and only the first one books. A lease
    whose reservation is gone (settled meanwhile, or evicted) is dropped, so
    that it never holds a place in the next sweeps.
    Returns how many reservations were charged now.
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    charged = 0
    for request_id in await store.expired_leases(now_ms):
        held = await store.reservation(request_id)
        if held is None:
            await store.drop_lease(request_id)
            continue
        try:
            booked = await _charge_estimate(store, request_id, held)
        except StoreUnavailable as exc:
            if not answered_with_error(exc):
                raise
            # One reservation Redis refuses must not hold back the others.
            log.error(
                "expired reservation refused by redis; left for the next sweep",
                extra={"request_id": request_id, "reason": str(exc)},
            )
            continue
        charged += booked
    return charged


async def sweep_forever(
    store_of: Callable[[], BudgetStore], interval_ms: int, *, grace_ms: int = 0
) -> None:
    """Run ``settle_expired_leases`` every ``interval_ms`` until cancelled.

    A call whose settlement went to a local journal while Redis was down
    still holds its lease, and an outage longer than the lease lets it run
    out: charged at its estimate first, the real settlement replayed later
    would find the call settled and be dropped. So after start and after
    every failure the sweep only probes Redis until it has answered for
    ``grace_ms``, time for the journals to replay.
    """
    answering_since = time.monotonic()
    while True:
        await asyncio.sleep(interval_ms / 1000)
        store = store_of()
        try:
            if (time.monotonic() - answering_since) * 1000 < grace_ms:
                await store.expired_leases(0, limit=1)  # a probe, charges nothing
                continue
            charged = await settle_expired_leases(store)
        except StoreUnavailable as exc:
            answering_since = time.monotonic()
            log.warning("lease sweep skipped", extra={"reason": str(exc)})
            continue
        if charged:
            log.warning(
                "charged expired reservations at their estimate",
                extra={"count": charged},
            )


async def _charge_estimate(
    store: BudgetStore, request_id: str, held: dict[str, str]
) -> bool:
    record = _record(held.get("record", ""))
    estimate = int(held.get("estimate", "0"))
    settlement = Settlement(
        request_id=request_id,
        cost_micro_usd=-1,
        input_tokens=0,
        output_tokens=0,
        estimated=True,
        outcome=LEASE_EXPIRED,
        detail={"estimate_micro_usd": estimate},
    )
    attribution = Attribution.from_dict(record)
    keys = [line for line in held.get("buckets", "").split("\n") if line]
    # The cost of -1 charges what each bucket held, so the scope is all the
    # settlement needs of a bucket here.
    buckets = [
        BucketSpec(scope=key.split(":bucket:", 1)[1], capacity=0)
        for key in keys
        if ":bucket:" in key
    ]

    return await store.settle(settlement, buckets, attribution)


def _record(text: str) -> dict[str, object]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
