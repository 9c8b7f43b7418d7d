"""The gemini and vertex families: path routing, request reading, streams."""

from __future__ import annotations

import json

import pytest

from extproc.metering.usage import Usage
from extproc.providers.base import Endpoint
from extproc.providers.gemini import GeminiFamily, VertexFamily, gemini_usage

GEMINI = GeminiFamily()
VERTEX_PATH = (
    "/v1/projects/p/locations/us-central1/publishers/google/models/"
    "gemini-2.5-pro:streamGenerateContent?alt=sse"
)


def chunk(candidates: int, finish: str | None = None) -> dict:
    candidate = {"content": {"parts": [{"text": "x"}]}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    meta = {"promptTokenCount": 4, "candidatesTokenCount": candidates}

    return {
        "candidates": [candidate],
        "usageMetadata": meta,
        "modelVersion": "gemini-x",
    }


@pytest.mark.parametrize(
    "path, expected",
    [
        (
            "/v1beta/models/gemini-2.5-flash:generateContent",
            ("generate_content", True, False),
        ),
        (
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            ("generate_content", True, True),
        ),
        ("/v1beta/models/text-embedding-004:embedContent", ("embeddings", True, False)),
        ("/v1beta/models/gemini-2.5-flash:countTokens", ("count_tokens", False, False)),
        (VERTEX_PATH, ("generate_content", True, True)),
    ],
)
def test_path_method_sets_operation_billing_and_streaming(path: str, expected) -> None:
    endpoint = GEMINI.endpoint_for("POST", path)

    assert expected == (endpoint.operation, endpoint.billable, endpoint.streaming)


def test_unknown_method_is_not_a_metered_operation() -> None:
    assert None is GEMINI.endpoint_for("POST", "/v1beta/models/m:predictLongRunning")


def test_model_comes_from_the_vertex_path() -> None:
    endpoint = GEMINI.endpoint_for("POST", VERTEX_PATH)

    assert "gemini-2.5-pro" == GEMINI.read_request(endpoint, VERTEX_PATH, b"{}").model


def test_output_cap_is_max_output_tokens_times_candidate_count() -> None:
    path = "/v1beta/models/m:generateContent"
    body = b'{"generationConfig": {"maxOutputTokens": 100, "candidateCount": 2}}'

    facts = GEMINI.read_request(GEMINI.endpoint_for("POST", path), path, body)

    assert 200 == facts.max_output_tokens


def test_usage_output_adds_thoughts_to_candidates() -> None:
    meta = {"promptTokenCount": 10, "candidatesTokenCount": 2, "thoughtsTokenCount": 5}

    assert Usage(10, 7, reasoning_tokens=5) == gemini_usage(meta)


def test_usage_counts_tool_use_prompt_as_input() -> None:
    meta = {
        "promptTokenCount": 10,
        "toolUsePromptTokenCount": 6,
        "candidatesTokenCount": 1,
    }

    assert 16 == gemini_usage(meta).input_tokens


def test_usage_metadata_without_counters_is_unknown() -> None:
    assert None is gemini_usage({"trafficType": "ON_DEMAND"})


def test_json_array_stream_fed_byte_by_byte_takes_the_last_chunk() -> None:
    body = json.dumps([chunk(3), chunk(8, "STOP")], indent=1).encode()
    endpoint = GEMINI.endpoint_for("POST", "/v1beta/models/m:streamGenerateContent")
    reader = GEMINI.open_reader(
        endpoint, streaming=True, content_type="application/json"
    )
    for i in range(len(body)):
        reader.feed(body[i : i + 1])

    reading = reader.finish()

    assert (Usage(4, 8, reasoning_tokens=0), None) == (reading.usage, reading.problem)


def test_sse_stream_whose_last_chunk_leaves_a_count_out_keeps_it() -> None:
    first = {
        "candidates": [{"content": {"parts": [{"text": "Hi"}]}}],
        "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 30},
    }
    last = {
        "candidates": [{"finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 42},
    }
    endpoint = GEMINI.endpoint_for("POST", VERTEX_PATH)
    reader = GEMINI.open_reader(
        endpoint, streaming=True, content_type="text/event-stream"
    )
    for event in (first, last):
        reader.feed(f"data: {json.dumps(event)}\n\n".encode())

    usage = reader.finish().usage
    assert (12, 30) == (usage.input_tokens, usage.output_tokens)


def test_json_array_stream_cut_mid_array_notes_it() -> None:
    body = json.dumps([chunk(3), chunk(8, "STOP")]).encode()
    endpoint = GEMINI.endpoint_for("POST", "/v1beta/models/m:streamGenerateContent")
    reader = GEMINI.open_reader(
        endpoint, streaming=True, content_type="application/json"
    )
    reader.feed(body[: len(body) // 2 + 5])

    assert "stream ended before the end of its JSON array" in reader.finish().problem


def test_json_array_stream_cut_inside_an_element_counts_it_as_unread() -> None:
    whole = json.dumps(chunk(3)).encode()
    body = b"[" + whole + b"," + whole[:20]
    endpoint = GEMINI.endpoint_for("POST", "/v1beta/models/m:streamGenerateContent")
    reader = GEMINI.open_reader(
        endpoint, streaming=True, content_type="application/json"
    )
    reader.feed(body)

    reading = reader.finish()
    assert (1, 20) == (reading.text_chars, reading.unread_chars)


def test_function_call_arguments_count_as_generated_text() -> None:
    call = {"functionCall": {"name": "weather", "args": {"city": "Paris"}}}
    body = {"candidates": [{"content": {"parts": [call]}}]}
    endpoint = GEMINI.endpoint_for("POST", VERTEX_PATH)
    reader = GEMINI.open_reader(
        endpoint, streaming=True, content_type="text/event-stream"
    )
    reader.feed(f"data: {json.dumps(body)}\n\n".encode())

    assert len('{"city":"Paris"}') == reader.finish().text_chars


def test_sse_stream_without_finish_reason_notes_the_cut() -> None:
    endpoint = GEMINI.endpoint_for("POST", VERTEX_PATH)
    reader = GEMINI.open_reader(
        endpoint, streaming=True, content_type="text/event-stream"
    )
    reader.feed(f"data: {json.dumps(chunk(3))}\r\n\r\n".encode())

    assert "stream ended before a finishReason" == reader.finish().problem


def test_gemini_credential_is_the_goog_api_key_header() -> None:
    assert {"x-goog-api-key": "k"} == GEMINI.credential_headers("k")


def test_vertex_credential_is_a_bearer_token() -> None:
    assert {"authorization": "Bearer t"} == VertexFamily().credential_headers("t")


def test_vertex_endpoints_name_the_vertex_family() -> None:
    assert Endpoint(
        "vertex", "generate_content", streaming=True
    ) == VertexFamily().endpoint_for("POST", VERTEX_PATH)


def test_error_body_has_google_error_shape() -> None:
    body = json.loads(GEMINI.error_body(429, "budget_exceeded", "Over budget."))

    assert (429, "RESOURCE_EXHAUSTED", "Over budget.") == (
        body["error"]["code"],
        body["error"]["status"],
        body["error"]["message"],
    )


def test_audio_in_the_prompt_breakdown_is_counted_apart() -> None:
    usage = gemini_usage(
        {
            "promptTokenCount": 100000,
            "candidatesTokenCount": 6,
            "totalTokenCount": 100006,
            "promptTokensDetails": [
                {"modality": "AUDIO", "tokenCount": 99990},
                {"modality": "TEXT", "tokenCount": 10},
            ],
        }
    )

    assert (100000, 99990) == (usage.input_tokens, usage.input_audio_tokens)


VERTEX_CLAUDE = (
    "/v1/projects/p/locations/us-east5/publishers/anthropic/models/"
    "claude-sonnet-4-5@20250929:streamRawPredict"
)


def test_claude_on_vertex_is_read_as_anthropic_messages() -> None:
    vertex = VertexFamily()
    endpoint = vertex.endpoint_for("POST", VERTEX_CLAUDE)
    facts = vertex.read_request(
        endpoint,
        VERTEX_CLAUDE,
        b'{"anthropic_version":"vertex-2023-10-16","max_tokens":100,"messages":[]}',
    )
    reader = vertex.open_reader(
        endpoint, streaming=True, content_type="text/event-stream"
    )
    reader.feed(
        b'event: message_start\ndata: {"type":"message_start","message":'
        b'{"model":"claude-sonnet-4-5","usage":{"input_tokens":9,"output_tokens":1}}}'
        b'\n\nevent: message_delta\ndata: {"type":"message_delta","delta":{},'
        b'"usage":{"output_tokens":30}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )

    assert ("claude-sonnet-4-5@20250929", True, 100) == (
        facts.model,
        facts.streaming,
        facts.max_output_tokens,
    )
    assert Usage(9, 30) == reader.finish().usage


def test_claude_token_counting_on_vertex_is_free() -> None:
    path = (
        "/v1/projects/p/locations/l/publishers/anthropic/models/count-tokens:rawPredict"
    )

    assert False is VertexFamily().endpoint_for("POST", path).billable
