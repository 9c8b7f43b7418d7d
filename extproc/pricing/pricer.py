"""Prices from ``genai-prices`` plus the policy's overrides, in micro-USD.

Resolution order for a (provider, model): a policy override for that
provider and model, a policy override for the model under any provider, the
``genai-prices`` snapshot, and last the policy's fallback rate (flagged, so an
unknown model is never free). A resolution is computed once per (provider,
model) and kept for the life of the policy.

Costs are rounded up to the next whole micro-USD: a call that used tokens is
never recorded as free, and the rounding never exceeds one micro-USD a call.
"""

from __future__ import annotations

import logging
import threading
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
        calculation = model.calc_price(
            _library_usage(usage),
            provider,
            genai_request_timestamp=datetime.now(UTC),
            price_context={"service_tier": service_tier} if service_tier else None,
        )
        return calculation.total_price * MICRO_PER_USD

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
