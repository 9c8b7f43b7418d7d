"""Every recorded provider body in shared/fixtures meters to its expected usage.

The family, endpoint and reader come from each fixture's meta.json; the body
is fed whole and in seeded random chunk sizes (1-byte chunks included), and
the reading must not depend on the chunking.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from extproc.providers import family
from extproc.providers.base import Reading
from tests.provider_fixtures import FIXTURES, WEB_SEARCHES

METAS = sorted(FIXTURES.glob("*.meta.json"))
CHUNKINGS = ("whole", "bytes", "seed-1", "seed-2", "seed-3", "seed-4")

FAMILY_BY_PROVIDER = {
    "openai": "openai",
    "azure-openai": "azure-openai",
    "groq": "openai-compatible",
    "mistral": "openai-compatible",
    "vllm": "openai-compatible",
    "anthropic": "anthropic",
    "google-gemini": "gemini",
    "google-vertex-ai": "vertex",
    "aws-bedrock": "bedrock",
}

# The fixtures write reasoning 0 for these because the model does not reason;
# the wire carries no reasoning counter, and a reader cannot know the model,
# so it reports None: "not broken out", as Usage documents.
REASONING_NOT_ON_WIRE = {
    "mistral_chat_nonstream_cached.json",
    "vllm_chat_stream_include_usage.sse",
}


def _meta(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _chunks(body: bytes, chunking: str) -> list[bytes]:
    if chunking == "whole":
        return [body]
    if chunking == "bytes":
        return [body[i : i + 1] for i in range(len(body))]

    rng = random.Random(chunking)
    chunks, pos = [], 0
    while pos < len(body):
        size = rng.choice((1, 2, 3, 7, 64, 500, 4096))
        chunks.append(body[pos : pos + size])
        pos += size

    return chunks


def _read(meta: dict[str, Any], chunking: str) -> Reading:
    name = FAMILY_BY_PROVIDER[meta["provider"].split(" ")[0]]
    method, path = meta["endpoint"].split(" ")[:2]
    path = re.sub(r"\{[^}]+\}", "placeholder", path)
    provider = family(name)
    endpoint = provider.endpoint_for(method, path)
    assert endpoint is not None, f"{name} does not route {path}"

    reader = provider.open_reader(
        endpoint, streaming=meta["streaming"], content_type=meta["content_type"]
    )
    for chunk in _chunks((FIXTURES / meta["file"]).read_bytes(), chunking):
        reader.feed(chunk)

    return reader.finish()


def _expected(meta: dict[str, Any]) -> dict[str, int | None] | None:
    expected = meta["expected_usage"]
    if expected.get("AMBIGUOUS"):
        expected = expected["sum_of_iterations_billable"]
    elif expected.get("usage_present") is False:
        return None

    reasoning = expected["reasoning_tokens"]
    if reasoning == "n/a" or meta["file"] in REASONING_NOT_ON_WIRE:
        reasoning = None

    return {
        "input_tokens": expected["input_tokens"],
        "output_tokens": expected["output_tokens"],
        "cache_read_tokens": expected["cached_read_input_tokens"],
        "cache_write_tokens": expected["cache_creation_input_tokens"],
        "reasoning_tokens": reasoning,
        "total_tokens": expected["total_tokens"],
    }


@pytest.mark.parametrize("chunking", CHUNKINGS)
@pytest.mark.parametrize("meta_path", METAS, ids=lambda p: p.name[: -len(".meta.json")])
def test_fixture_meters_to_its_expected_usage(meta_path: Path, chunking: str) -> None:
    meta = _meta(meta_path)
    expected = _expected(meta)

    reading = _read(meta, chunking)

    if expected is None:
        assert (None, True) == (reading.usage, bool(reading.problem))
    else:
        assert reading.usage is not None, reading.problem
        got = reading.usage.as_dict()
        for beyond_the_index in (
            "cache_write_1h_tokens",
            "input_audio_tokens",
            "output_audio_tokens",
        ):
            assert 0 == got.pop(beyond_the_index)
        name = meta_path.name[: -len(".meta.json")]
        assert WEB_SEARCHES.get(name, 0) == got.pop("web_search_requests")
        assert expected == got


def test_every_fixture_body_has_a_meta_so_none_goes_untested() -> None:
    companions = (".meta.json", ".b64", ".events.json", ".md")
    bodies = {p.name for p in FIXTURES.iterdir() if not p.name.endswith(companions)}

    assert bodies == {_meta(p)["file"] for p in METAS}
    assert bodies
