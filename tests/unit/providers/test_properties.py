"""Property tests: usage readers and request readers take any bytes calmly."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extproc.errors import BadRequest
from extproc.providers import family
from extproc.providers.base import Reading

READERS = [
    ("openai", "/v1/chat/completions", "text/event-stream"),
    ("openai", "/v1/chat/completions", "application/json"),
    ("openai", "/v1/responses", "text/event-stream"),
    ("anthropic", "/v1/messages", "text/event-stream"),
    ("anthropic", "/v1/messages", "application/json"),
    ("gemini", "/v1beta/models/g:streamGenerateContent?alt=sse", "text/event-stream"),
    ("gemini", "/v1beta/models/g:streamGenerateContent", "application/json"),
    ("bedrock", "/model/m/converse-stream", "application/vnd.amazon.eventstream"),
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "usage",
                    "prompt_tokens",
                    "completion_tokens",
                    "input_tokens",
                    "output_tokens",
                    "usageMetadata",
                    "promptTokenCount",
                    "type",
                    "choices",
                    "model",
                    "error",
                    "message",
                    "delta",
                    "cache_read_input_tokens",
                    "response",
                ]
            ),
            inner,
            max_size=5,
        )
    ),
    max_leaves=20,
)


def _reader(name: str, path: str, content_type: str):
    provider = family(name)
    endpoint = provider.endpoint_for("POST", path)
    return provider.open_reader(
        endpoint, streaming="json" not in content_type, content_type=content_type
    )


def _sse(values: list) -> bytes:
    return b"".join(b"data: " + json.dumps(v).encode() + b"\n\n" for v in values)


@pytest.mark.parametrize(("name", "path", "content_type"), READERS)
@given(data=st.binary(max_size=600), cut=st.integers(min_value=1, max_value=64))
@settings(max_examples=60, deadline=None)
def test_any_bytes_in_any_pieces_give_a_reading(
    name, path, content_type, data, cut
) -> None:
    reader = _reader(name, path, content_type)

    for start in range(0, len(data), cut):
        reader.feed(data[start : start + cut])
    reading = reader.finish()

    assert isinstance(reading, Reading)
    assert reading.usage is not None or reading.problem


@pytest.mark.parametrize(("name", "path", "content_type"), READERS[:6])
@given(values=st.lists(json_values, max_size=6))
@settings(max_examples=80, deadline=None)
def test_arbitrary_json_events_never_yield_negative_or_float_counts(
    name, path, content_type, values
) -> None:
    reader = _reader(name, path, content_type)
    body = (
        _sse(values) if "event-stream" in content_type else json.dumps(values).encode()
    )

    reader.feed(body)
    reading = reader.finish()

    usage = reading.usage
    if usage is not None:
        counts = [
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_tokens,
            usage.cache_write_tokens,
            usage.cache_write_1h_tokens,
        ]
        assert all(isinstance(c, int) and c >= 0 for c in counts)
    else:
        assert reading.problem


@pytest.mark.parametrize("name", ["openai", "anthropic", "gemini", "bedrock"])
@given(body=st.binary(max_size=400))
@settings(max_examples=80, deadline=None)
def test_request_reader_accepts_or_refuses_clearly(name, body) -> None:
    provider = family(name)
    path = {
        "openai": "/v1/chat/completions",
        "anthropic": "/v1/messages",
        "gemini": "/v1beta/models/g:generateContent",
        "bedrock": "/model/m/converse",
    }[name]
    endpoint = provider.endpoint_for("POST", path)

    try:
        facts = provider.read_request(endpoint, path, body)
    except BadRequest as refusal:
        assert refusal.message
        return

    assert facts.input_estimate_tokens >= 0
    assert facts.max_output_tokens is None or facts.max_output_tokens > 0
