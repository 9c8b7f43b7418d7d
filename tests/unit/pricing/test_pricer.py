"""Prices: genai-prices, policy overrides, fallback; always integer micro-USD."""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

import genai_prices

from extproc.metering.usage import Usage
from extproc.policy.model import FallbackPrice, ModelPrice, Pricing
from extproc.pricing import Pricer
from extproc.pricing.pricer import RESOLUTIONS_KEPT


def _library_micro(usage: genai_prices.Usage, model: str, provider: str) -> int:
    price = genai_prices.calc_price(usage, model, provider_id=provider).total_price
    return int((price * 1_000_000).to_integral_value(rounding=ROUND_CEILING))


def test_known_model_is_priced_by_genai_prices_with_cache_rates() -> None:
    usage = Usage(
        input_tokens=1532,
        output_tokens=33,
        cache_read_tokens=1111,
        cache_write_tokens=418,
    )

    price = Pricer(Pricing()).price(
        "anthropic", "anthropic", "claude-sonnet-4-5", usage
    )

    expected = _library_micro(
        genai_prices.Usage(
            input_tokens=1532,
            output_tokens=33,
            cache_read_tokens=1111,
            cache_write_tokens=418,
        ),
        "claude-sonnet-4-5",
        "anthropic",
    )
    assert (expected, "genai-prices") == (price.cost_micro_usd, price.source)


def test_cache_reads_cost_less_than_uncached_input() -> None:
    pricer = Pricer(Pricing())

    cached = pricer.price(
        "openai", "openai", "gpt-4o", Usage(4000, 0, cache_read_tokens=4000)
    )
    uncached = pricer.price("openai", "openai", "gpt-4o", Usage(4000, 0))

    assert cached.cost_micro_usd < uncached.cost_micro_usd


def test_one_hour_cache_writes_cost_more_than_five_minute_ones() -> None:
    pricer = Pricer(Pricing())
    short = Usage(1000, 10, cache_write_tokens=500)
    long = Usage(1000, 10, cache_write_tokens=500, cache_write_1h_tokens=500)

    assert (
        pricer.price(
            "anthropic", "anthropic", "claude-sonnet-4-5", short
        ).cost_micro_usd
        < pricer.price(
            "anthropic", "anthropic", "claude-sonnet-4-5", long
        ).cost_micro_usd
    )


def test_policy_override_wins_over_the_library() -> None:
    override = ModelPrice(
        model="gpt-4o",
        provider="openai",
        input_usd_per_mtok=Decimal(1),
        output_usd_per_mtok=Decimal(2),
    )

    price = Pricer(Pricing(models=(override,))).price(
        "openai", "openai", "GPT-4o", Usage(1_000_000, 500_000)
    )

    assert (2_000_000, "policy") == (price.cost_micro_usd, price.source)


def test_override_cache_rates_default_to_the_input_rate() -> None:
    override = ModelPrice(
        model="my-llama",
        input_usd_per_mtok=Decimal("0.2"),
        output_usd_per_mtok=Decimal("0.6"),
    )

    price = Pricer(Pricing(models=(override,))).price(
        "openai", "vllm", "my-llama", Usage(1000, 0, cache_read_tokens=1000)
    )

    assert 200 == price.cost_micro_usd


def test_unknown_model_is_charged_the_fallback_rate_and_flagged() -> None:
    pricing = Pricing(
        fallback=FallbackPrice(
            input_usd_per_mtok=Decimal(10), output_usd_per_mtok=Decimal(30)
        )
    )

    price = Pricer(pricing).price("openai", "openai", "no-such-model-x", Usage(100, 10))

    assert (1300, "fallback", True) == (
        price.cost_micro_usd,
        price.source,
        price.flagged,
    )


def test_missing_model_is_charged_the_fallback_rate() -> None:
    price = Pricer(Pricing()).price("openai", "openai", None, Usage(100, 10))

    assert price.flagged and price.cost_micro_usd > 0


def test_sub_micro_cost_rounds_up_to_one_micro_usd() -> None:
    price = Pricer(Pricing()).price(
        "openai", "openai", "text-embedding-3-small", Usage(4, 0)
    )

    assert 1 == price.cost_micro_usd


def test_zero_usage_costs_nothing() -> None:
    assert (
        0
        == Pricer(Pricing()).price("openai", "openai", "gpt-4o", Usage()).cost_micro_usd
    )


def test_output_cap_comes_from_override_then_default() -> None:
    override = ModelPrice(
        model="m",
        input_usd_per_mtok=Decimal(1),
        output_usd_per_mtok=Decimal(1),
        max_output_tokens=77,
    )
    pricer = Pricer(Pricing(default_max_output_tokens=500, models=(override,)))

    assert (77, 500) == (
        pricer.max_output_tokens("p", "m"),
        pricer.max_output_tokens("p", "x"),
    )


def test_a_model_named_with_a_provider_path_is_priced_as_the_model() -> None:
    pricer = Pricer(Pricing())
    usage = Usage(input_tokens=1000, output_tokens=100)

    routed = pricer.price("openai", "openai", "openai/gpt-4o", usage)
    google = pricer.price("gemini", "gemini", "models/gemini-2.5-flash", usage)

    assert (
        pricer.price("openai", "openai", "gpt-4o", usage).cost_micro_usd,
        pricer.price("gemini", "gemini", "gemini-2.5-flash", usage).cost_micro_usd,
        "genai-prices",
    ) == (routed.cost_micro_usd, google.cost_micro_usd, routed.source)


def test_the_service_tier_the_provider_reports_sets_the_rates() -> None:
    pricer = Pricer(Pricing())
    usage = Usage(input_tokens=100_000, output_tokens=100_000)

    standard = pricer.price("openai", "openai", "gpt-5", usage)
    flex = pricer.price("openai", "openai", "gpt-5", usage, service_tier="flex")

    assert standard.cost_micro_usd == 2 * flex.cost_micro_usd


def test_web_searches_and_audio_input_are_priced_at_their_own_rates() -> None:
    pricer = Pricer(Pricing())

    searches = (
        pricer.price(
            "anthropic",
            "anthropic",
            "claude-sonnet-4-5",
            Usage(15, 42, web_search_requests=3),
        ).cost_micro_usd
        - pricer.price(
            "anthropic", "anthropic", "claude-sonnet-4-5", Usage(15, 42)
        ).cost_micro_usd
    )
    audio = pricer.price(
        "gemini", "gemini", "gemini-2.5-flash", Usage(1000, 0, input_audio_tokens=1000)
    )
    text = pricer.price("gemini", "gemini", "gemini-2.5-flash", Usage(1000, 0))

    assert 30_000 == searches  # 10 USD per thousand searches
    assert audio.cost_micro_usd > text.cost_micro_usd


def test_counters_that_contradict_each_other_are_priced_not_refused() -> None:
    # More cached tokens than prompt tokens; a 1h breakdown beyond the writes.
    pricer = Pricer(Pricing())

    cached = pricer.price(
        "openai", "openai", "gpt-4o", Usage(10, 1, cache_read_tokens=100)
    )
    hour = pricer.price(
        "anthropic",
        "anthropic",
        "claude-sonnet-4-5",
        Usage(3005, 42, cache_write_tokens=0, cache_write_1h_tokens=3000),
    )

    assert ("genai-prices", "genai-prices") == (cached.source, hour.source)
    assert cached.cost_micro_usd > 0 and hour.cost_micro_usd > 18_000


def test_the_answered_model_is_billed_when_it_has_a_price() -> None:
    pricer = Pricer(Pricing())

    assert ("gpt-5-nano", "my-router") == (
        pricer.billed_model("azure-openai", "azure", "my-router", "gpt-5-nano"),
        pricer.billed_model("azure-openai", "azure", "my-router", "no-such-model"),
    )


def _every_library_model():
    from genai_prices import data_snapshot

    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            yield provider, model


_RATE_CARD_USAGES = (
    Usage(100, 50),
    Usage(5_000, 100, cache_read_tokens=3_000),
    Usage(10, 10, cache_read_tokens=5, cache_write_tokens=5),
    Usage(199_999, 1),
    Usage(200_001, 1, cache_write_tokens=1_000),
    Usage(128_001, 7, cache_read_tokens=128_000),
)


def test_rate_cards_price_every_library_model_as_the_library_does() -> None:
    pricer = Pricer(Pricing())
    checked = 0

    for provider, model in _every_library_model():
        for tier in (None, "default", "standard", "priority", "flex"):
            card = pricer._flat_card(provider, model, tier)
            for usage in _RATE_CARD_USAGES:
                if card is None or not card.covers(usage):
                    continue
                library = model.calc_price(
                    genai_prices.Usage(
                        input_tokens=usage.input_tokens,
                        output_tokens=usage.output_tokens,
                        cache_read_tokens=usage.cache_read_tokens,
                        cache_write_tokens=usage.cache_write_tokens,
                    ),
                    provider,
                    price_context={"service_tier": tier} if tier else None,
                )
                assert library.total_price * 1_000_000 == card.rates.cost(usage), (
                    provider.id,
                    model.id,
                    tier,
                    usage,
                )
                checked += 1

    assert checked > 1_000


def test_input_past_a_long_context_tier_is_priced_at_the_tier_rate() -> None:
    pricer = Pricer(Pricing())
    below, above = Usage(200_000, 0), Usage(200_001, 0)

    short = pricer.price("anthropic", "anthropic", "claude-sonnet-4-5", below)
    long = pricer.price("anthropic", "anthropic", "claude-sonnet-4-5", above)

    expected_long = _library_micro(
        genai_prices.Usage(input_tokens=200_001, output_tokens=0),
        "claude-sonnet-4-5",
        "anthropic",
    )
    assert expected_long == long.cost_micro_usd
    assert long.cost_micro_usd * 10 > short.cost_micro_usd * 19  # a higher rate


def test_a_priced_bedrock_model_id_wins_over_the_vendor_name_answered() -> None:
    # The path's id names the deployment billed (a global profile is
    # cheaper than an in-region one); Claude's body only names the model.
    pricer = Pricer(Pricing())
    requested = "global.anthropic.claude-sonnet-4-5-20250929-v1:0"

    assert requested == pricer.billed_model(
        "bedrock", "bedrock", requested, "claude-sonnet-4-5-20250929"
    )


def test_an_unpriced_bedrock_profile_arn_is_billed_as_the_model_answered() -> None:
    pricer = Pricer(Pricing())
    arn = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/x1"

    assert "claude-sonnet-4-5-20250929" == pricer.billed_model(
        "bedrock", "bedrock", arn, "claude-sonnet-4-5-20250929"
    )


def test_prices_kept_for_model_names_are_bounded_however_many_are_named() -> None:
    # Clients name models freely (an unknown one is still priced, at the
    # fallback rate): the resolutions kept must not grow with them.
    pricer = Pricer(Pricing())

    for n in range(RESOLUTIONS_KEPT + 100):
        pricer.price("openai", "openai", f"made-up-model-{n}", Usage(10, 10))

    assert RESOLUTIONS_KEPT == len(pricer._resolved)
    known = pricer.price("openai", "openai", "gpt-4o", Usage(1, 1))
    assert "genai-prices" == known.source
