"""The response meter reads a body by what it is, whatever its label says."""

from __future__ import annotations

import gzip
import zlib

import pytest

from extproc.metering.meter import ResponseMeter, body_format
from extproc.metering.usage import Usage
from extproc.providers import family
from tests.provider_fixtures import FIXTURES

OPENAI_STREAM = (
    b'data: {"object":"chat.completion.chunk","model":"gpt-4o-mini",'
    b'"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}\n\n'
    b'data: {"object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[],'
    b'"usage":{"prompt_tokens":10,"completion_tokens":2,"total_tokens":12}}\n\n'
    b"data: [DONE]\n\n"
)
OPENAI_ERROR = b'{"error":{"message":"no such model","type":"invalid_request_error"}}'


def meter(body: bytes, content_type: str, *, step: int = 0, **kwargs) -> object:
    provider = family(kwargs.pop("provider", "openai"))
    path = kwargs.pop("path", "/v1/chat/completions")
    endpoint = provider.endpoint_for("POST", path)
    response = ResponseMeter(provider, endpoint, content_type=content_type, **kwargs)
    pieces = (
        [body] if not step else [body[i : i + step] for i in range(0, len(body), step)]
    )
    for piece in pieces:
        response.feed(piece)

    return response.finish()


@pytest.mark.parametrize("content_type", ["text/plain", "application/json", ""])
def test_sse_under_another_content_type_is_read_as_sse(content_type) -> None:
    reading = meter(OPENAI_STREAM, content_type)

    assert (Usage(10, 2), None) == (reading.usage, reading.problem)


def test_sse_fed_one_byte_at_a_time_is_sniffed_the_same() -> None:
    reading = meter(OPENAI_STREAM, "text/plain", step=1)

    assert Usage(10, 2) == reading.usage


def test_json_error_labelled_as_event_stream_is_read_as_json() -> None:
    reading = meter(OPENAI_ERROR, "text/event-stream")

    assert "error: invalid_request_error: no such model" == reading.problem


def test_mislabelled_gzip_stream_is_sniffed_after_decoding() -> None:
    reading = meter(
        gzip.compress(OPENAI_STREAM), "text/plain", step=7, content_encoding="gzip"
    )

    assert Usage(10, 2) == reading.usage


def test_aws_event_stream_labelled_as_json_is_read_as_frames() -> None:
    body = (FIXTURES / "bedrock_converse_stream.bin").read_bytes()
    path = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream"

    reading = meter(body, "application/json", provider="bedrock", path=path)

    assert (210, 18) == (reading.usage.input_tokens, reading.usage.output_tokens)


def test_empty_body_has_no_usage_and_says_so() -> None:
    reading = meter(b"", "application/json")

    assert (None, "unparseable JSON body") == (reading.usage, reading.problem)


@pytest.mark.parametrize(
    ("declared", "head", "expected"),
    [
        ("application/json", b"  {", "application/json"),
        (
            "text/event-stream; charset=utf-8",
            b"event: x",
            "text/event-stream; charset=utf-8",
        ),
        ("text/plain", b"\r\n: ping", "text/event-stream"),
        ("text/html", b"<html>", "text/html"),
    ],
)
def test_body_format_keeps_a_label_the_bytes_do_not_contradict(
    declared, head, expected
) -> None:
    assert expected == body_format(declared, head)


def test_a_json_array_stream_without_a_content_type_is_read_as_json() -> None:
    body = (
        b'[{"candidates":[{"content":{"parts":[{"text":"hi"}]}}]},'
        b'{"candidates":[{"finishReason":"STOP"}],"usageMetadata":'
        b'{"promptTokenCount":5,"candidatesTokenCount":2,"totalTokenCount":7}}]'
    )
    path = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"

    reading = meter(body, "", provider="gemini", path=path)

    assert (Usage(5, 2, reasoning_tokens=0), True) == (reading.usage, reading.complete)


def test_usage_in_the_headers_stands_in_for_a_body_without_it() -> None:
    path = "/model/mistral.mistral-large-2407-v1:0/invoke"
    headers = {
        "x-amzn-bedrock-input-token-count": "20",
        "x-amzn-bedrock-output-token-count": "7",
    }

    reading = meter(
        b'{"outputs":[{"text":"hello","stop_reason":"stop"}]}',
        "application/json",
        provider="bedrock",
        path=path,
        headers=headers,
    )

    assert (Usage(20, 7), None) == (reading.usage, reading.problem)


def _fed(body: bytes, content_type: str, **kwargs) -> ResponseMeter:
    provider = family("openai")
    endpoint = provider.endpoint_for("POST", "/v1/chat/completions")
    response = ResponseMeter(provider, endpoint, content_type=content_type, **kwargs)
    response.feed(body)
    return response


def test_meter_says_the_body_ended_once_its_last_event_is_read() -> None:
    assert True is _fed(OPENAI_STREAM, "text/event-stream").ended


def test_meter_has_not_ended_before_the_last_event() -> None:
    body = OPENAI_STREAM.removesuffix(b"data: [DONE]\n\n")

    assert False is _fed(body, "text/event-stream").ended


def test_gzip_stream_cut_after_its_last_event_reads_whole() -> None:
    compressor = zlib.compressobj(wbits=31)
    flushed = compressor.compress(OPENAI_STREAM) + compressor.flush(zlib.Z_SYNC_FLUSH)

    response = _fed(flushed, "text/event-stream", content_encoding="gzip")
    reading = response.finish()

    assert (Usage(10, 2), None, True) == (
        reading.usage,
        reading.problem,
        reading.complete,
    )


ROLE_ONLY_CHUNK = (
    b'data: {"object":"chat.completion.chunk","model":"gpt-4o-mini","choices":'
    b'[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}'
    b"\n\n"
)


def test_events_without_generated_text_count_nothing() -> None:
    reading = meter(ROLE_ONLY_CHUNK, "text/event-stream")

    assert (0, 0) == (reading.text_chars, reading.unread_chars)


def test_event_cut_in_its_middle_counts_its_data_as_unread() -> None:
    partial = b'data: {"choices":[{"delta":{"content":"Hello wor'

    reading = meter(ROLE_ONLY_CHUNK + partial, "text/event-stream")

    assert len(partial) - len(b"data: ") == reading.unread_chars


def test_unparseable_json_body_counts_as_unread() -> None:
    body = b'{"choices":[{"message":{"content":"cut sho'

    assert len(body) == meter(body, "application/json").unread_chars


def test_body_that_cannot_be_decoded_counts_as_unread() -> None:
    body = b"this is not gzip at all, but it says it is"

    reading = meter(body, "text/event-stream", content_encoding="gzip")

    assert len(body) == reading.unread_chars
