"""The anthropic family: routing, request reading, usage merging."""

from __future__ import annotations

import json

import pytest

from extproc.errors import BadRequest
from extproc.metering.usage import Usage
from extproc.providers.anthropic import AnthropicFamily, anthropic_usage
from extproc.providers.base import Endpoint

ANTHROPIC = AnthropicFamily()
MESSAGES = Endpoint("anthropic", "chat")


def event(obj: dict) -> str:
    return f"event: {obj['type']}\ndata: {json.dumps(obj)}\n\n"


def meter(*events: str):
    reader = ANTHROPIC.open_reader(
        MESSAGES, streaming=True, content_type="text/event-stream"
    )
    for text in events:
        reader.feed(text.encode())

    return reader.finish()


def start(**usage: int) -> str:
    message = {"model": "claude-x", "usage": usage}

    return event({"type": "message_start", "message": message})


def delta(**usage: int) -> str:
    return event(
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": usage}
    )


STOP = event({"type": "message_stop"})


def test_messages_path_is_chat() -> None:
    assert MESSAGES == ANTHROPIC.endpoint_for("POST", "/v1/messages?beta=true")


def test_count_tokens_is_free() -> None:
    endpoint = ANTHROPIC.endpoint_for("POST", "/v1/messages/count_tokens")

    assert (False, "count_tokens") == (endpoint.billable, endpoint.operation)


def test_count_tokens_reads_zero_usage() -> None:
    endpoint = ANTHROPIC.endpoint_for("POST", "/v1/messages/count_tokens")
    reader = ANTHROPIC.open_reader(
        endpoint, streaming=False, content_type="application/json"
    )
    reader.feed(b'{"input_tokens": 50}')

    assert Usage() == reader.finish().usage


def test_request_gives_model_stream_and_max_tokens() -> None:
    body = b'{"model": "claude-x", "stream": true, "max_tokens": 1024}'

    facts = ANTHROPIC.read_request(MESSAGES, "/v1/messages", body)

    assert ("claude-x", True, 1024) == (
        facts.model,
        facts.streaming,
        facts.max_output_tokens,
    )


def test_request_that_is_not_json_is_a_bad_request() -> None:
    with pytest.raises(BadRequest):
        ANTHROPIC.read_request(MESSAGES, "/v1/messages", b"nope")


def test_credential_is_the_x_api_key_header() -> None:
    assert {"x-api-key": "k"} == ANTHROPIC.credential_headers("k")


def test_usage_input_adds_cache_reads_and_writes_to_uncached_input() -> None:
    raw = {
        "input_tokens": 3,
        "cache_read_input_tokens": 10,
        "cache_creation_input_tokens": 5,
    }

    assert 18 == anthropic_usage(raw).input_tokens


def test_usage_one_hour_cache_writes_are_kept_apart() -> None:
    raw = {
        "input_tokens": 1,
        "output_tokens": 1,
        "cache_creation_input_tokens": 30,
        "cache_creation": {
            "ephemeral_5m_input_tokens": 10,
            "ephemeral_1h_input_tokens": 20,
        },
    }

    assert (30, 20) == (
        anthropic_usage(raw).cache_write_tokens,
        anthropic_usage(raw).cache_write_1h_tokens,
    )


def test_usage_with_only_the_cache_breakdown_counts_every_write() -> None:
    raw = {
        "input_tokens": 4,
        "output_tokens": 1,
        "cache_creation": {
            "ephemeral_5m_input_tokens": 10,
            "ephemeral_1h_input_tokens": 20,
        },
    }

    usage = anthropic_usage(raw)

    assert (34, 30, 20) == (
        usage.input_tokens,
        usage.cache_write_tokens,
        usage.cache_write_1h_tokens,
    )


def test_usage_iterations_are_summed() -> None:
    raw = {
        "input_tokens": 5,
        "output_tokens": 1,
        "iterations": [
            {"input_tokens": 2, "output_tokens": 3, "cache_read_input_tokens": 4},
            {"input_tokens": 5, "output_tokens": 1},
        ],
    }

    assert Usage(11, 4, 4, 0, 0, None) == anthropic_usage(raw)


def test_stream_delta_restating_input_replaces_it_rather_than_adding() -> None:
    reading = meter(
        start(input_tokens=20, output_tokens=1),
        delta(input_tokens=20, output_tokens=5),
        STOP,
    )

    assert Usage(20, 5) == reading.usage


def test_stream_delta_with_output_only_keeps_start_input() -> None:
    reading = meter(
        start(input_tokens=7, cache_read_input_tokens=3, output_tokens=1),
        delta(output_tokens=9),
        STOP,
    )

    assert Usage(10, 9, 3) == reading.usage


def test_stream_error_after_start_keeps_partial_usage_and_notes_the_error() -> None:
    error = event(
        {
            "type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded"},
        }
    )

    reading = meter(start(input_tokens=7, output_tokens=1), error)

    expected = "error: overloaded_error: Overloaded; stream ended before message_stop"
    assert (Usage(7, 1), expected) == (reading.usage, reading.problem)


def test_stream_reports_model_and_stop_reason() -> None:
    reading = meter(
        start(input_tokens=1, output_tokens=1), delta(output_tokens=2), STOP
    )

    assert ("claude-x", ("end_turn",)) == (reading.model, reading.finish_reasons)


def test_error_body_has_anthropic_error_shape() -> None:
    body = json.loads(ANTHROPIC.error_body(429, "budget_exceeded", "Over budget."))

    expected = {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Over budget."},
    }
    assert expected == body


def test_stream_counts_text_thinking_and_tool_json_chars() -> None:
    deltas = [
        {"type": "thinking_delta", "thinking": "ab"},
        {"type": "text_delta", "text": "cde"},
        {"type": "input_json_delta", "partial_json": '{"x"'},
        {"type": "signature_delta", "signature": "zzzzzz"},
    ]
    events = [
        event({"type": "content_block_delta", "index": 0, "delta": d}) for d in deltas
    ]

    assert 9 == meter(*events, STOP).text_chars


def test_stream_without_message_stop_is_incomplete() -> None:
    assert False is meter(start(input_tokens=1, output_tokens=1)).complete


def test_a_final_count_that_cannot_be_read_leaves_the_reading_not_whole() -> None:
    malformed = delta(output_tokens="500")

    reading = meter(start(input_tokens=10, output_tokens=1), malformed, STOP)

    assert (Usage(10, 1), False) == (reading.usage, reading.complete)


def test_a_delta_restating_counts_as_zero_keeps_the_start_counts() -> None:
    reading = meter(
        start(input_tokens=3, cache_read_input_tokens=20000, output_tokens=1),
        delta(
            input_tokens=0,
            cache_creation_input_tokens=0,
            cache_read_input_tokens=0,
            output_tokens=42,
        ),
        STOP,
    )

    assert Usage(20003, 42, cache_read_tokens=20000) == reading.usage


def test_one_hour_cache_writes_survive_a_delta_that_zeroes_the_total() -> None:
    hour = {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 3000}
    reading = meter(
        event(
            {
                "type": "message_start",
                "message": {
                    "model": "claude-x",
                    "usage": {
                        "input_tokens": 5,
                        "cache_creation_input_tokens": 3000,
                        "cache_creation": hour,
                        "output_tokens": 1,
                    },
                },
            }
        ),
        delta(input_tokens=0, cache_creation_input_tokens=0, output_tokens=42),
        STOP,
    )

    assert (3005, 3000, 3000) == (
        reading.usage.input_tokens,
        reading.usage.cache_write_tokens,
        reading.usage.cache_write_1h_tokens,
    )


def test_web_searches_are_counted_beside_the_tokens() -> None:
    usage = anthropic_usage(
        {
            "input_tokens": 15,
            "output_tokens": 42,
            "server_tool_use": {"web_search_requests": 3},
        }
    )

    assert 3 == usage.web_search_requests


def test_the_service_tier_of_the_answer_is_read() -> None:
    reader = ANTHROPIC.open_reader(
        MESSAGES, streaming=False, content_type="application/json"
    )
    reader.feed(
        b'{"type":"message","model":"claude-x","content":[],'
        b'"usage":{"input_tokens":5,"output_tokens":1,"service_tier":"priority"}}'
    )

    assert "priority" == reader.finish().service_tier


def test_message_stop_marks_the_stream_ended() -> None:
    assert True is meter(start(input_tokens=1, output_tokens=1), STOP).ended


def test_stream_without_message_stop_has_not_ended() -> None:
    assert False is meter(start(input_tokens=1, output_tokens=1)).ended
