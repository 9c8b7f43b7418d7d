"""The openai family: routing, request reading, the usage rewrite, readers."""

from __future__ import annotations

import json

import pytest

from extproc.errors import BadRequest, EndpointNotAllowed
from extproc.metering.usage import Usage
from extproc.providers.azure_openai import AzureOpenAIFamily
from extproc.providers.base import Endpoint
from extproc.providers.openai import OpenAIFamily, openai_usage

OPENAI = OpenAIFamily()
CHAT = Endpoint("openai", "chat")
INSERTED = b'"stream_options":{"include_usage":true},'


def read(body: bytes, path: str = "/v1/chat/completions", family=OPENAI):
    endpoint = family.endpoint_for("POST", path)

    return family.read_request(endpoint, path, body)


def meter(*events: str, content_type: str = "text/event-stream"):
    reader = OPENAI.open_reader(CHAT, streaming=True, content_type=content_type)
    for event in events:
        reader.feed(event.encode())

    return reader.finish()


@pytest.mark.parametrize(
    "path, operation",
    [
        ("/v1/chat/completions", "chat"),
        ("/chat/completions?x=1", "chat"),
        ("/openai/v1/chat/completions", "chat"),
        ("/openai/deployments/gpt-4o/chat/completions?api-version=2024-12-01", "chat"),
        ("/v1/completions", "text_completion"),
        ("/v1/responses", "chat"),
        ("/embeddings", "embeddings"),
    ],
)
def test_paths_classify_by_their_tail(path: str, operation: str) -> None:
    assert Endpoint("openai", operation) == OPENAI.endpoint_for("POST", path)


@pytest.mark.parametrize(
    "method, path", [("GET", "/v1/chat/completions"), ("POST", "/v1/models")]
)
def test_other_requests_are_not_metered_operations(method: str, path: str) -> None:
    assert None is OPENAI.endpoint_for(method, path)


def test_model_comes_from_the_body() -> None:
    assert "gpt-4o" == read(b'{"model": "gpt-4o"}').model


def test_azure_model_falls_back_to_the_deployment_name() -> None:
    path = "/openai/deployments/my%20gpt/chat/completions?api-version=1"

    assert "my gpt" == read(b'{"messages": []}', path).model


def test_azure_model_in_the_body_wins_over_the_deployment() -> None:
    path = "/openai/deployments/dep/chat/completions"

    assert "gpt-4o" == read(b'{"model": "gpt-4o"}', path).model


@pytest.mark.parametrize("stream, expected", [(True, True), (False, False), (1, False)])
def test_streaming_is_stream_true(stream, expected: bool) -> None:
    assert expected is read(json.dumps({"stream": stream}).encode()).streaming


@pytest.mark.parametrize(
    "body, cap",
    [
        ({"max_tokens": 100}, 100),
        ({"max_completion_tokens": 50, "max_tokens": 100}, 50),
        ({"max_output_tokens": 70}, 70),
        ({"max_tokens": 100, "n": 3}, 300),
        ({}, None),
    ],
)
def test_output_cap_reads_the_limit_times_n(body: dict, cap: int | None) -> None:
    assert cap == read(json.dumps(body).encode()).max_output_tokens


def test_legacy_completion_cap_counts_best_of_candidates() -> None:
    body = b'{"max_tokens": 10, "best_of": 4, "n": 2}'

    assert 40 == read(body, "/v1/completions").max_output_tokens


def test_embeddings_output_cap_is_zero() -> None:
    assert 0 == read(b'{"input": "x"}', "/v1/embeddings").max_output_tokens


def test_input_estimate_is_body_bytes_over_three_rounded_up() -> None:
    assert 5 == read(b'{"a":"bcdefg"}').input_estimate_tokens  # 14 bytes


def test_stream_without_usage_request_gets_it_inserted_after_the_brace() -> None:
    body = b'  {"model": "gpt-4o",\n "stream": true, "x": "\xc3\xa9"}'

    assert body[:3] + INSERTED + body[3:] == read(body).body


def test_stream_options_without_include_usage_are_reserialised() -> None:
    body = '{"stream": true, "stream_options": {"a": 1}, "t": "é"}'.encode()

    expected = '{"stream":true,"stream_options":{"a":1,"include_usage":true},"t":"é"}'
    assert expected.encode() == read(body).body


def test_stream_that_already_asks_for_usage_is_not_rewritten() -> None:
    body = b'{"stream": true, "stream_options": {"include_usage": true}}'

    assert None is read(body).body


def test_non_streaming_request_is_not_rewritten() -> None:
    assert None is read(b'{"model": "m"}').body


def test_responses_stream_is_not_rewritten() -> None:
    assert None is read(b'{"stream": true}', "/v1/responses").body


def test_legacy_completion_stream_is_rewritten() -> None:
    assert read(b'{"stream": true}', "/v1/completions").body.startswith(b"{" + INSERTED)


def test_rewrite_can_be_turned_off_for_strict_servers() -> None:
    strict = OpenAIFamily(ask_stream_usage=False)

    assert None is read(b'{"stream": true}', family=strict).body


@pytest.mark.parametrize(
    "body", [b"{not json", b"[1, 2]", b"", b'{"t": NaN}', b"\xff\xfe{}"]
)
def test_a_body_that_is_not_a_json_object_is_a_bad_request(body: bytes) -> None:
    with pytest.raises(BadRequest, match="JSON object"):
        read(body)


def test_credential_is_a_bearer_token() -> None:
    assert {"authorization": "Bearer sk-1"} == OPENAI.credential_headers("sk-1")


def test_azure_credential_is_an_api_key_header() -> None:
    assert {"api-key": "k"} == AzureOpenAIFamily().credential_headers("k")


def test_error_body_has_openai_error_shape() -> None:
    body = json.loads(OPENAI.error_body(429, "budget_exceeded", "Over budget."))

    expected = {
        "message": "Over budget.",
        "type": "rate_limit_error",
        "param": None,
        "code": "budget_exceeded",
    }
    assert {"error": expected} == body


def usage_chunk(output_tokens: int) -> str:
    usage = {"prompt_tokens": 5, "completion_tokens": output_tokens}

    return f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n"


def test_stream_takes_the_last_usage_and_never_sums() -> None:
    reading = meter(usage_chunk(1), usage_chunk(9), "data: [DONE]\n\n")

    assert 9 == reading.usage.output_tokens


def test_a_readable_usage_after_a_malformed_one_leaves_the_reading_whole() -> None:
    malformed = 'data: {"choices": [], "usage": {"prompt_tokens": "10"}}\n\n'

    reading = meter(malformed, usage_chunk(9), "data: [DONE]\n\n")

    assert (9, True) == (reading.usage.output_tokens, reading.complete)


def test_stream_cut_before_done_notes_the_truncation() -> None:
    reading = meter('data: {"choices": [{"delta": {}}]}\n\n')

    assert "stream ended before [DONE]" == reading.problem


def test_stream_without_usage_is_unknown_not_zero() -> None:
    reading = meter('data: {"choices": []}\n\n', "data: [DONE]\n\n")

    assert (None, "no usage in response") == (reading.usage, reading.problem)


def test_responses_error_event_is_a_problem() -> None:
    error = {"type": "error", "code": "server_error", "message": "boom"}

    assert meter(f"event: error\ndata: {json.dumps(error)}\n\n").problem.startswith(
        "error: server_error: boom"
    )


def test_responses_failed_event_carries_usage_and_its_error() -> None:
    response = {
        "status": "failed",
        "error": {"code": "server_error", "message": "x"},
        "usage": {"input_tokens": 3, "output_tokens": 2},
    }
    event = json.dumps({"type": "response.failed", "response": response})

    reading = meter(f"data: {event}\n\n")

    assert (3, "error: server_error: x") == (
        reading.usage.input_tokens,
        reading.problem,
    )


def test_garbage_event_data_is_noted_not_raised() -> None:
    reading = meter("data: {oops\n\n", "data: [DONE]\n\n")

    assert "unparseable event data" == reading.problem


def test_json_error_body_for_a_streaming_request_is_read_as_json() -> None:
    body = '{"error": {"message": "bad", "type": "invalid_request_error"}}'

    reading = meter(body, content_type="application/json")

    assert "error: invalid_request_error: bad" == reading.problem


def test_stream_cut_before_done_is_incomplete() -> None:
    assert False is meter('data: {"choices": []}\n\n').complete


def test_finished_stream_is_complete() -> None:
    assert True is meter('data: {"choices": []}\n\n', "data: [DONE]\n\n").complete


def test_stream_counts_generated_text_and_reasoning_chars() -> None:
    deltas = [{"content": "héllo"}, {"reasoning": "hmm"}, {"role": "assistant"}]
    events = [f"data: {json.dumps({'choices': [{'delta': d}]})}\n\n" for d in deltas]

    assert 8 == meter(*events, "data: [DONE]\n\n").text_chars


def test_responses_stream_counts_text_from_delta_events_only() -> None:
    delta = {"type": "response.output_text.delta", "delta": "abc"}
    done = {
        "type": "response.completed",
        "response": {"output": [{"content": [{"text": "abc"}]}], "usage": None},
    }

    reading = meter(f"data: {json.dumps(delta)}\n\n", f"data: {json.dumps(done)}\n\n")

    assert 3 == reading.text_chars


def test_error_problem_comes_first_among_problems() -> None:
    reading = meter("data: {oops\n\n", 'data: {"error": {"message": "m"}}\n\n')

    assert reading.problem.startswith("error: m; ")


def test_reasoning_counted_beside_completion_tokens_joins_the_output() -> None:
    # xAI: total = prompt + completion + reasoning, and the total is billed.
    usage = openai_usage(
        {
            "prompt_tokens": 12,
            "completion_tokens": 1,
            "total_tokens": 399,
            "completion_tokens_details": {"reasoning_tokens": 386},
        }
    )

    assert (387, 386, 399) == (
        usage.output_tokens,
        usage.reasoning_tokens,
        usage.total_tokens,
    )


def test_reasoning_inside_completion_tokens_is_not_added_again() -> None:
    usage = openai_usage(
        {
            "prompt_tokens": 7,
            "completion_tokens": 87,
            "total_tokens": 94,
            "completion_tokens_details": {"reasoning_tokens": 64},
        }
    )

    assert (87, 64) == (usage.output_tokens, usage.reasoning_tokens)


def test_a_total_beyond_prompt_and_completion_is_output_left_unitemised() -> None:
    # Gemini's OpenAI-compatible endpoint: thinking is in the total only.
    usage = openai_usage(
        {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 105}
    )

    assert (9, 96, 105) == (
        usage.input_tokens,
        usage.output_tokens,
        usage.total_tokens,
    )


def test_a_stream_whose_chunks_carry_a_thinking_total_meters_the_total() -> None:
    chunk = (
        'data: {"choices":[{"delta":{"content":"1, 2"},"index":0%s}],'
        '"object":"chat.completion.chunk","usage":{"completion_tokens":%d,'
        '"prompt_tokens":9,"total_tokens":%d}}\n\n'
    )

    reading = meter(chunk % ("", 1, 103), chunk % (',"finish_reason":"stop"', 3, 105))

    assert Usage(9, 96) == reading.usage


def test_audio_tokens_are_read_as_parts_of_input_and_output() -> None:
    usage = openai_usage(
        {
            "prompt_tokens": 100,
            "completion_tokens": 50,
            "prompt_tokens_details": {"audio_tokens": 80},
            "completion_tokens_details": {"audio_tokens": 40},
        }
    )

    assert (80, 40) == (usage.input_audio_tokens, usage.output_audio_tokens)


def test_the_service_tier_of_the_answer_is_read() -> None:
    reader = OPENAI.open_reader(CHAT, streaming=False, content_type="application/json")
    reader.feed(
        b'{"object":"chat.completion","model":"gpt-4.1","service_tier":"priority",'
        b'"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1}}'
    )

    assert "priority" == reader.finish().service_tier


def test_deepseek_cache_hits_are_read_as_cache_reads() -> None:
    # DeepSeek reports its cache in its own counters, not in cached_tokens.
    usage = openai_usage(
        {
            "prompt_tokens": 1000,
            "completion_tokens": 10,
            "total_tokens": 1010,
            "prompt_cache_hit_tokens": 900,
            "prompt_cache_miss_tokens": 100,
        }
    )

    assert (1000, 900) == (usage.input_tokens, usage.cache_read_tokens)


def test_cache_hits_reported_twice_are_counted_once() -> None:
    usage = openai_usage(
        {
            "prompt_tokens": 1000,
            "completion_tokens": 10,
            "prompt_tokens_details": {"cached_tokens": 900},
            "prompt_cache_hit_tokens": 900,
        }
    )

    assert 900 == usage.cache_read_tokens


def test_background_response_is_refused_because_its_usage_comes_later() -> None:
    # The usage of a background response is only in a later GET, which
    # passes unmetered; admitting it would bill a queued stub.
    with pytest.raises(EndpointNotAllowed, match="background"):
        read(b'{"model": "o3-pro", "background": true}', path="/v1/responses")


def test_foreground_response_is_read() -> None:
    facts = read(b'{"model": "o3", "background": false}', path="/v1/responses")

    assert "o3" == facts.model


def _response_with_searches(*statuses: str) -> dict:
    searches = [
        {"type": "web_search_call", "id": f"ws_{i}", "status": status}
        for i, status in enumerate(statuses)
    ]
    return {
        "object": "response",
        "status": "completed",
        "model": "gpt-5",
        "output": [*searches, {"type": "message", "content": []}],
        "usage": {"input_tokens": 900, "output_tokens": 40, "total_tokens": 940},
    }


def test_responses_web_search_calls_are_counted_as_web_searches() -> None:
    reader = OPENAI.open_reader(CHAT, streaming=False, content_type="application/json")
    body = _response_with_searches("completed", "completed", "failed")
    reader.feed(json.dumps(body).encode())

    assert 2 == reader.finish().usage.web_search_requests


def test_responses_stream_counts_web_searches_of_the_completed_response() -> None:
    response = _response_with_searches("completed")
    event = {"type": "response.completed", "response": response}

    reading = meter(f"event: response.completed\ndata: {json.dumps(event)}\n\n")

    assert 1 == reading.usage.web_search_requests


def test_stream_ending_with_its_usage_chunk_but_no_done_is_complete() -> None:
    # Some compatible servers (llama.cpp forks, older TGI) never send [DONE];
    # the usage chunk, with no choices, is already the last one.
    text = '{"choices": [{"delta": {"content": "hi"}, "finish_reason": "stop"}]}'
    usage = '{"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1}}'

    reading = meter(f"data: {text}\n\n", f"data: {usage}\n\n")

    assert (True, None) == (reading.complete, reading.problem)


def test_usage_beside_choices_does_not_end_the_stream() -> None:
    # Servers that report running usage in every chunk (vLLM's continuous
    # usage stats) have not finished when a chunk carries usage.
    chunk = (
        '{"choices": [{"delta": {"content": "hi"}}],'
        ' "usage": {"prompt_tokens": 5, "completion_tokens": 1}}'
    )

    assert False is meter(f"data: {chunk}\n\n").complete


def test_done_marks_the_stream_ended() -> None:
    assert True is meter(usage_chunk(9), "data: [DONE]\n\n").ended


def test_usage_chunk_without_done_does_not_end_the_stream() -> None:
    assert False is meter(usage_chunk(9)).ended


def test_responses_completed_event_marks_the_stream_ended() -> None:
    response = {"status": "completed", "usage": {"input_tokens": 3, "output_tokens": 2}}
    event = json.dumps({"type": "response.completed", "response": response})

    assert True is meter(f"data: {event}\n\n").ended


@pytest.mark.parametrize(
    "body, tier",
    [
        (b'{"model": "gpt-5", "service_tier": "priority"}', "priority"),
        (b'{"model": "gpt-5", "service_tier": "flex"}', "flex"),
        (b'{"model": "gpt-5"}', None),
        (b'{"model": "gpt-5", "service_tier": 1}', None),
    ],
)
def test_the_service_tier_asked_for_is_read(body: bytes, tier: str | None) -> None:
    assert tier == read(body).service_tier
