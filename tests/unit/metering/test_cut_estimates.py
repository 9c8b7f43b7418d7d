"""A stream cut short is estimated from the text its provider produced.

Every recorded stream of shared/fixtures with more than one event (OpenAI
chat and Responses, Anthropic, Gemini, Bedrock, the OpenAI-compatible
servers) is cut after each of its events in turn, as a client that hangs up
would cut it, and charged the way the gateway charges it.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import pytest

from extproc.metering.charge import CallFacts, Charge, decide_charge
from extproc.metering.meter import ResponseMeter
from extproc.providers import InputEstimate, family
from tests.provider_fixtures import FIXTURES
from tests.unit.providers.test_fixtures import FAMILY_BY_PROVIDER

REQUEST_BYTES = 400
OUTPUT_CAP_TOKENS = 4096


def _streams() -> list[Path]:
    metas = sorted(FIXTURES.glob("*.meta.json"))
    streams = [p for p in metas if json.loads(p.read_text())["streaming"]]
    return [p for p in streams if len(_events(_meta(p))) > 1]


def _meta(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _events(meta: dict[str, Any]) -> list[bytes]:
    """The body cut after each event: SSE events, or event-stream frames."""
    body = (FIXTURES / meta["file"]).read_bytes()
    if meta["content_type"] == "application/vnd.amazon.eventstream":
        return _frames(body)
    separator = b"\r\n\r\n" if b"\r\n\r\n" in body else b"\n\n"
    return [part + separator for part in body.split(separator) if part.strip()]


def _frames(body: bytes) -> list[bytes]:
    frames, pos = [], 0
    while pos < len(body):
        (length,) = struct.unpack(">I", body[pos : pos + 4])
        frames.append(body[pos : pos + length])
        pos += length
    return frames


def _charge(meta: dict[str, Any], body: bytes) -> Charge:
    """What the gateway charges when the client hangs up after ``body``."""
    provider = family(FAMILY_BY_PROVIDER[meta["provider"].split(" ")[0]])
    method, path = meta["endpoint"].split(" ")[:2]
    endpoint = provider.endpoint_for(method, re.sub(r"\{[^}]+\}", "m", path))
    meter = ResponseMeter(provider, endpoint, content_type=meta["content_type"])
    meter.feed(body)
    facts = CallFacts(
        billable=True,
        request_input=InputEstimate(REQUEST_BYTES),
        output_cap_tokens=OUTPUT_CAP_TOKENS,
        status=meta["http_status"],
        reading=meter.finish(),
        streaming=True,
    )
    return decide_charge(facts)


def _output_after_each_event(meta: dict[str, Any]) -> list[int]:
    """The output charged for the stream cut after its first event, its
    second, and so on (for a long stream, after a sample of 40 events)."""
    events = _events(meta)
    cuts = range(1, len(events), max(1, len(events) // 40))
    outputs = []
    for count in cuts:
        charge = _charge(meta, b"".join(events[:count]))
        outputs.append(charge.usage.output_tokens if charge.usage else 0)
    return outputs


STREAMS = pytest.mark.parametrize(
    "meta_path", _streams(), ids=lambda p: p.name[: -len(".meta.json")]
)


@STREAMS
def test_estimate_of_a_cut_stream_grows_with_the_events_seen(meta_path) -> None:
    outputs = _output_after_each_event(_meta(meta_path))

    assert sorted(outputs) == outputs


@STREAMS
def test_stream_cut_after_its_first_event_is_charged_no_more_output_than_whole(
    meta_path,
) -> None:
    meta = _meta(meta_path)
    whole = _charge(meta, b"".join(_events(meta)))
    whole_output = whole.usage.output_tokens if whole.usage else 0

    first = _output_after_each_event(meta)[0]

    assert first <= whole_output


def test_openai_stream_cut_after_its_role_only_chunk_is_charged_its_prompt_only() -> (
    None
):
    meta = _meta(FIXTURES / "openai_chat_stream_include_usage.meta.json")
    first = _events(meta)[0]

    charge = _charge(meta, first)

    assert b'"role":"assistant","content":""' in first
    assert ("estimated_cut", 100, 0) == (
        charge.outcome,
        charge.usage.input_tokens,
        charge.usage.output_tokens,
    )
