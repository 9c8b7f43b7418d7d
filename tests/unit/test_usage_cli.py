"""tollgate usage: a saved response body metered and priced as the gateway does."""

from __future__ import annotations

import json
from decimal import ROUND_CEILING
from pathlib import Path

import genai_prices
import pytest

from extproc.errors import BadRequest
from extproc.usage_cli import report

DEEPSEEK_BODY = {
    "model": "deepseek-chat",
    "choices": [],
    "usage": {
        "prompt_tokens": 1000,
        "completion_tokens": 10,
        "prompt_cache_hit_tokens": 900,
        "prompt_cache_miss_tokens": 100,
    },
}


def test_an_empty_body_is_refused_rather_than_charged_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")

    with pytest.raises(BadRequest, match="empty"):
        report(str(empty), provider="openai", path="/v1/chat/completions")


def test_pricing_provider_prices_a_compatible_server_by_its_own_rates(
    tmp_path: Path,
) -> None:
    body = tmp_path / "deepseek.json"
    body.write_text(json.dumps(DEEPSEEK_BODY))

    named = report(
        str(body),
        provider="openai-compatible",
        path="/v1/chat/completions",
        pricing_provider="deepseek",
    )

    usage = genai_prices.Usage(
        input_tokens=1000, output_tokens=10, cache_read_tokens=900
    )
    price = genai_prices.calc_price(usage, "deepseek-chat", provider_id="deepseek")
    expected = int((price.total_price * 1_000_000).to_integral_value(ROUND_CEILING))
    assert (expected, "genai-prices") == (
        named["cost_micro_usd"],
        named["price_source"],
    )
