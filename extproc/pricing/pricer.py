"""Prices from ``genai-prices`` plus the policy's overrides, in micro-USD.

Resolution order for a (provider, model): a policy override for that
provider and model, a policy override for the model under any provider, the
``genai-prices`` snapshot, and last the policy's fallback rate (flagged, so an
unknown model is never free). A resolution is computed once per (provider,
model) and kept for the life of the policy, for the ``RESOLUTIONS_KEPT``
names seen last.

The library price in force for a model is read once as per-token rates
(by asking the library to price probe usages, checked against it on a mixed
usage) and applied to the common counters: input, cache read, cache write,
output, below the first long-context tier. Anything else (input past a tier,
audio, web searches, one-hour cache writes, a served service tier, a price
shape the rates cannot express) is priced by the library call by call. Both
ways give the same figure.

Costs are rounded up to the next whole micro-USD: a call that used tokens is
never recorded as free, and the rounding never exceeds one micro-USD a call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal
from typing import Any

import genai_prices
from genai_prices import data_snapshot

from extproc.metering.usage import Usage
from extproc.money import MICRO_PER_USD
from extproc.policy.model import ModelPrice, Pricing

log = logging.getLogger(__name__)

SOURCE_OVERRIDE = "policy"
SOURCE_LIBRARY = "genai-prices"
SOURCE_FALLBACK = "fallback"

# genai-prices provider ids for each of our provider families.
_LIBRARY_PROVIDER = {
    "openai": "openai",
    "azure-openai": "azure",
    "anthropic": "anthropic",
    "gemini": "google",
    "vertex": "google",
    "bedrock": "aws",
}
# Resolutions kept, oldest forgotten first: clients name models freely, and
# each unknown name is priced too, so the cache must not grow with them.
RESOLUTIONS_KEPT = 4096
# Families whose requested model id names the deployment that is billed.
_ID_NAMES_DEPLOYMENT = frozenset({"bedrock"})


@dataclass(frozen=True, slots=True)
class Price:
    """The cost of one usage and where the rates came from."""

    cost_micro_usd: int
    source: str
    model_ref: str | None

    @property
    def flagged(self) -> bool:
        return self.source == SOURCE_FALLBACK


@dataclass(frozen=True, slots=True)
class _Rates:
    """Own rates in micro-USD per token (numerically USD per million tokens)."""

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal
    cache_write_1h: Decimal

    def cost(self, usage: Usage) -> Decimal:
        uncached = max(
            usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens, 0
        )
        short_writes = max(usage.cache_write_tokens - usage.cache_write_1h_tokens, 0)
        return (
            uncached * self.input
            + usage.cache_read_tokens * self.cache_read
            + short_writes * self.cache_write
            + usage.cache_write_1h_tokens * self.cache_write_1h
            + usage.output_tokens * self.output
        )


@dataclass(frozen=True, slots=True)
class _Resolved:
    source: str
    model_ref: str | None
    rates: _Rates | None = None
    library: tuple[Any, Any] | None = None  # (provider, model) of genai-prices


class Pricer:
    """Prices usage for one policy. Safe to share between threads."""

    def __init__(self, pricing: Pricing) -> None:
        self._pricing = pricing
        self._overrides = {(p.provider, p.model.lower()): p for p in pricing.models}
        self._resolved: dict[tuple[str, str, str | None], _Resolved] = {}
        self._cards: dict[
            tuple[int, int, str | None], tuple[int, _FlatCard | None]
        ] = {}
        self._lock = threading.Lock()

    def price(
        self,
        family: str,
        provider: str,
        model: str | None,
        usage: Usage,
        *,
        pricing_provider: str | None = None,
        service_tier: str | None = None,
    ) -> Price:
        """The cost of ``usage`` of ``model`` at ``provider`` (a policy name).

        ``service_tier`` is the tier the provider says it served the call in
        (``priority``, ``flex``...), priced at that tier's rates where the
        library has them. Never raises: usage the library refuses is priced
        at the fallback rate and flagged.
        """
        usage = usage.consistent()
        resolved = self._resolve(family, provider, model, pricing_provider)
        try:
            exact = self._exact_cost_micro(resolved, usage, service_tier)
        except Exception:  # a price is always produced; the cause is logged
            log.exception(
                "pricing failed; using the fallback rate",
                extra={"provider": provider, "model": model},
            )
            resolved = self._fallback()
            exact = self._exact_cost_micro(resolved, usage, None)

        cost = int(exact.to_integral_value(rounding=ROUND_CEILING))
        return Price(
            cost_micro_usd=cost, source=resolved.source, model_ref=resolved.model_ref
        )

    def knows(
        self,
        family: str,
        provider: str,
        model: str | None,
        *,
        pricing_provider: str | None = None,
    ) -> bool:
        """True when ``model`` has a price other than the fallback rate."""
        if model is None:
            return False
        resolved = self._resolve(family, provider, model, pricing_provider)
        return resolved.source != SOURCE_FALLBACK

    def billed_model(
        self,
        family: str,
        provider: str,
        requested: str | None,
        answered: str | None,
        *,
        pricing_provider: str | None = None,
    ) -> str | None:
        """The model a call is priced as: the one the provider says it ran
        when that has a price (a router deployment names another model than
        it answers with), else the one asked for.

        On Bedrock the id asked for, when it has a price, wins: it names the
        deployment billed (in-region, geographic or global profile), while a
        vendor's body names only the model."""
        if family in _ID_NAMES_DEPLOYMENT and self.knows(
            family, provider, requested, pricing_provider=pricing_provider
        ):
            return requested
        if answered and self.knows(
            family, provider, answered, pricing_provider=pricing_provider
        ):
            return answered
        return requested

    def max_output_tokens(self, provider: str, model: str | None) -> int:
        """The output cap to assume when a request sets none."""
        override = self._override(provider, model)
        if override is not None and override.max_output_tokens:
            return override.max_output_tokens
        return self._pricing.default_max_output_tokens

    def _exact_cost_micro(
        self, resolved: _Resolved, usage: Usage, service_tier: str | None
    ) -> Decimal:
        if resolved.rates is not None:
            return resolved.rates.cost(usage)
        provider, model = resolved.library
        if not _has_extras(usage):
            card = self._flat_card(provider, model, service_tier)
            if card is not None and card.covers(usage):
                return card.rates.cost(usage)
        return _library_cost(provider, model, usage, service_tier)

    def _flat_card(
        self, provider: Any, model: Any, service_tier: str | None
    ) -> _FlatCard | None:
        """The library's rates for ``model`` in ``service_tier``, read again
        each minute: library prices change at dates and times of day, given
        to the minute."""
        minute = int(time.time() // 60)
        key = (id(provider), id(model), service_tier)
        cached = self._cards.get(key)
        if cached is None or cached[0] != minute:
            cached = (minute, _flat_card(provider, model, service_tier))
            with self._lock:
                self._cards[key] = cached
        return cached[1]

    def _resolve(
        self,
        family: str,
        provider: str,
        model: str | None,
        pricing_provider: str | None,
    ) -> _Resolved:
        key = (provider, (model or "").lower(), pricing_provider)
        resolved = self._resolved.get(key)
        if resolved is None:
            resolved = self._resolve_uncached(family, provider, model, pricing_provider)
            with self._lock:
                while len(self._resolved) >= RESOLUTIONS_KEPT:
                    del self._resolved[next(iter(self._resolved))]
                self._resolved[key] = resolved
        return resolved

    def _resolve_uncached(
        self,
        family: str,
        provider: str,
        model: str | None,
        pricing_provider: str | None,
    ) -> _Resolved:
        override = self._override(provider, model)
        if override is not None:
            return _Resolved(
                SOURCE_OVERRIDE, override.model, rates=_override_rates(override)
            )

        library = _library_lookup(
            pricing_provider or _LIBRARY_PROVIDER.get(family), model
        )
        if library is not None:
            return _Resolved(SOURCE_LIBRARY, library[1].id, library=library)

        log.warning(
            "model has no known price; using the fallback rate",
            extra={"provider": provider, "model": model},
        )
        return self._fallback()

    def _fallback(self) -> _Resolved:
        fallback = self._pricing.fallback
        rates = _flat_rates(fallback.input_usd_per_mtok, fallback.output_usd_per_mtok)
        return _Resolved(SOURCE_FALLBACK, None, rates=rates)

    def _override(self, provider: str, model: str | None) -> ModelPrice | None:
        if model is None:
            return None
        name = model.lower()
        return self._overrides.get((provider, name)) or self._overrides.get(
            (None, name)
        )


def _library_lookup(
    provider_id: str | None, model: str | None
) -> tuple[Any, Any] | None:
    if model is None:
        return None
    snapshot = data_snapshot.get_snapshot()
    for name in _names_to_try(model):
        try:
            return snapshot.find_provider_model(name, None, provider_id, None)
        except LookupError:
            continue
    return None


def _names_to_try(model: str) -> tuple[str, ...]:
    """``model``, then without a leading path such as ``openai/`` (routers
    and compatible servers) or ``models/`` (Google's resource names). An
    ARN is left whole: the library reads those itself."""
    if "/" not in model or model.startswith("arn:"):
        return (model,)
    return (model, model.rsplit("/", 1)[1])


# Our counters that genai-prices prices apart when they are not zero.
_LIBRARY_EXTRAS = (
    ("cache_write_1h_tokens", "cache_write_1h_tokens"),
    ("input_audio_tokens", "input_audio_tokens"),
    ("output_audio_tokens", "output_audio_tokens"),
    ("web_search_requests", "web_searches"),
)


def _library_usage(usage: Usage) -> genai_prices.Usage:
    # Reasoning is part of output and priced as output, so it is not passed.
    fields = {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
    }
    for ours, theirs in _LIBRARY_EXTRAS:
        if getattr(usage, ours):
            fields[theirs] = getattr(usage, ours)
    return genai_prices.Usage(**fields)


_PROBE_TOKENS = 1_000
_CHECK_USAGE = Usage(
    input_tokens=7_000,
    output_tokens=3_000,
    cache_read_tokens=2_000,
    cache_write_tokens=1_000,
)


@dataclass(frozen=True, slots=True)
class _FlatCard:
    """A library price read as per-token rates, valid up to an input size.

    Long-context tiers charge every token at the tier's rate once the input
    passes the tier's start, so below the first start the base rates hold.
    """

    rates: _Rates
    max_input_tokens: int | None  # None: no tiers, valid for any input

    def covers(self, usage: Usage) -> bool:
        limit = self.max_input_tokens
        return limit is None or usage.input_tokens <= limit


def _flat_card(provider: Any, model: Any, service_tier: str | None) -> _FlatCard | None:
    """The library's current price of ``model`` as per-token rates, or None
    when the probes do not reproduce the library's own figure (a price
    shape these rates cannot express)."""
    limit = min(_tier_starts(model), default=None)
    if limit is not None and limit < _CHECK_USAGE.input_tokens:
        return None

    def cost(usage: Usage) -> Decimal:
        return _library_cost(provider, model, usage, service_tier)

    try:
        rates = _probe_rates(cost)
        agrees = rates.cost(_CHECK_USAGE) == cost(_CHECK_USAGE)
    except Exception:  # the library refuses a probe: price call by call
        return None

    return _FlatCard(rates, limit) if agrees else None


def _tier_starts(model: Any) -> list[int]:
    """Where any long-context tier of any of ``model``'s prices starts."""
    prices = model.prices
    cards = [prices] if not isinstance(prices, list) else [c.prices for c in prices]
    cards += [variant.prices for variant in model.price_variants or ()]
    return [
        tier.start
        for card in cards
        for value in vars(card).values()
        if isinstance(value, genai_prices.types.TieredPrices)
        for tier in value.tiers
    ]


def _probe_rates(cost: Callable[[Usage], Decimal]) -> _Rates:
    n = _PROBE_TOKENS

    def rate(**counts: int) -> Decimal:
        return cost(Usage(**counts)) / n

    cache_write = rate(input_tokens=n, cache_write_tokens=n)
    return _Rates(
        input=rate(input_tokens=n),
        output=rate(output_tokens=n),
        cache_read=rate(input_tokens=n, cache_read_tokens=n),
        cache_write=cache_write,
        cache_write_1h=cache_write,  # one-hour writes go to the library
    )


def _library_cost(
    provider: Any, model: Any, usage: Usage, service_tier: str | None = None
) -> Decimal:
    """What the library charges for ``usage`` now, in micro-USD."""
    calculation = model.calc_price(
        _library_usage(usage),
        provider,
        genai_request_timestamp=datetime.now(UTC),
        price_context={"service_tier": service_tier} if service_tier else None,
    )
    return calculation.total_price * MICRO_PER_USD


def _has_extras(usage: Usage) -> bool:
    """Counters only the library prices: audio, searches, one-hour writes."""
    return bool(
        usage.cache_write_1h_tokens
        or usage.input_audio_tokens
        or usage.output_audio_tokens
        or usage.web_search_requests
    )


def _override_rates(price: ModelPrice) -> _Rates:
    cache_write = price.cache_write_usd_per_mtok
    if cache_write is None:
        cache_write = price.input_usd_per_mtok
    cache_write_1h = price.cache_write_1h_usd_per_mtok
    return _Rates(
        input=price.input_usd_per_mtok,
        output=price.output_usd_per_mtok,
        cache_read=_or(price.cache_read_usd_per_mtok, price.input_usd_per_mtok),
        cache_write=cache_write,
        cache_write_1h=_or(cache_write_1h, cache_write),
    )


def _flat_rates(input_rate: Decimal, output_rate: Decimal) -> _Rates:
    return _Rates(input_rate, output_rate, input_rate, input_rate, input_rate)


def _or(value: Decimal | None, default: Decimal) -> Decimal:
    return default if value is None else value
