"""The bedrock family: routing, SigV4 signing, Converse and InvokeModel usage."""

from __future__ import annotations

import base64
import json
import struct
import zlib

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from extproc.errors import CredentialError
from extproc.metering.usage import Usage
from extproc.providers.bedrock import BedrockFamily, credentials_from_secret

BEDROCK = BedrockFamily()
CREDS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
UPSTREAM = "https://bedrock-runtime.us-east-1.amazonaws.com"
PROFILE_ARN = (
    "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-v1:0"
)
BODY = b'{"messages": [], "inferenceConfig": {"maxTokens": 256}}'


def sign(
    url: str, headers: dict[str, str], creds: Credentials = CREDS
) -> dict[str, str]:
    return BEDROCK.sign(
        method="POST",
        url=url,
        headers=headers,
        body=BODY,
        credentials=creds,
        region="us-east-1",
    )


def recomputed_signature(
    url: str, signed: dict[str, str], creds: Credentials = CREDS
) -> str:
    headers = {"content-type": "application/json", "X-Amz-Date": signed["x-amz-date"]}
    if creds.token:
        headers["X-Amz-Security-Token"] = creds.token
    request = AWSRequest(method="POST", url=url, data=BODY, headers=headers)
    request.context["timestamp"] = signed["x-amz-date"]
    auth = SigV4Auth(creds, "bedrock", "us-east-1")
    string_to_sign = auth.string_to_sign(request, auth.canonical_request(request))

    return auth.signature(string_to_sign, request)


def frame(headers: dict[str, str], payload: dict) -> bytes:
    """One AWS event-stream message (string headers, JSON payload)."""
    encoded = b"".join(
        bytes([len(k)]) + k.encode() + b"\x07" + struct.pack(">H", len(v)) + v.encode()
        for k, v in headers.items()
    )
    body = json.dumps(payload).encode()
    prelude = struct.pack(">II", 16 + len(encoded) + len(body), len(encoded))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + body

    return message + struct.pack(">I", zlib.crc32(message))


def chunk(event: dict) -> bytes:
    headers = {
        ":event-type": "chunk",
        ":content-type": "application/json",
        ":message-type": "event",
    }

    return frame(
        headers, {"bytes": base64.b64encode(json.dumps(event).encode()).decode()}
    )


def meter(path: str, body: bytes, content_type: str, *, step: int = 1):
    endpoint = BEDROCK.endpoint_for("POST", path)
    reader = BEDROCK.open_reader(
        endpoint, streaming=bool(endpoint.streaming), content_type=content_type
    )
    for i in range(0, len(body), step):
        reader.feed(body[i : i + step])

    return reader.finish()


@pytest.mark.parametrize(
    "action, streaming",
    [
        ("converse", False),
        ("converse-stream", True),
        ("invoke", False),
        ("invoke-with-response-stream", True),
    ],
)
def test_action_sets_streaming(action: str, streaming: bool) -> None:
    assert streaming is BEDROCK.endpoint_for("POST", f"/model/m/{action}").streaming


def test_url_encoded_arn_model_id_is_decoded() -> None:
    path = "/model/" + PROFILE_ARN.replace(":", "%3A").replace("/", "%2F") + "/converse"

    facts = BEDROCK.read_request(BEDROCK.endpoint_for("POST", path), path, BODY)

    assert PROFILE_ARN == facts.model


def test_converse_output_cap_is_inference_config_max_tokens() -> None:
    path = "/model/m/converse"

    assert (
        256
        == BEDROCK.read_request(
            BEDROCK.endpoint_for("POST", path), path, BODY
        ).max_output_tokens
    )


@pytest.mark.parametrize(
    "model, body, cap",
    [
        ("openai.gpt-oss-120b-1:0", {"max_completion_tokens": 8000}, 8000),
        ("ai21.jamba-1-5-large-v1:0", {"max_tokens": 500, "n": 4}, 2000),
        ("meta.llama3-70b-instruct-v1:0", {"max_gen_len": 300}, 300),
        ("amazon.titan-tg1-large", {"textGenerationConfig": {"maxTokenCount": 9}}, 9),
    ],
)
def test_invoke_output_cap_is_read_from_each_vendor_body(model, body, cap) -> None:
    path = f"/model/{model}/invoke"
    endpoint = BEDROCK.endpoint_for("POST", path)

    facts = BEDROCK.read_request(endpoint, path, json.dumps(body).encode())

    assert cap == facts.max_output_tokens


def test_invoke_on_an_embedding_model_is_embeddings() -> None:
    assert (
        "embeddings"
        == BEDROCK.endpoint_for(
            "POST", "/model/amazon.titan-embed-text-v2:0/invoke"
        ).operation
    )


def test_credential_headers_are_empty_because_the_flow_signs() -> None:
    assert ({}, True) == (BEDROCK.credential_headers("x"), BEDROCK.signs_body)


def test_signature_verifies_when_recomputed_for_the_host_sent() -> None:
    url = f"{UPSTREAM}/model/anthropic.claude-v1%3A0/converse"

    signed = sign(url, {"content-type": "application/json"})

    assert (
        recomputed_signature(url, signed)
        == signed["authorization"].split("Signature=")[1]
    )


def test_signature_ignores_the_client_host_header() -> None:
    url = f"{UPSTREAM}/model/m/converse"

    signed = sign(url, {"content-type": "application/json", "host": "gateway.internal"})

    assert (
        recomputed_signature(url, signed)
        == signed["authorization"].split("Signature=")[1]
    )


def test_signature_does_not_verify_for_another_host() -> None:
    signed = sign(f"{UPSTREAM}/model/m/converse", {"content-type": "application/json"})

    other = "https://bedrock-runtime.us-west-2.amazonaws.com/model/m/converse"
    assert (
        recomputed_signature(other, signed)
        != signed["authorization"].split("Signature=")[1]
    )


def test_signature_covers_only_content_type_host_and_date() -> None:
    signed = sign(
        f"{UPSTREAM}/model/m/converse",
        {"content-type": "application/json", "user-agent": "x"},
    )

    assert "SignedHeaders=content-type;host;x-amz-date," in signed["authorization"]


def test_temporary_credentials_add_and_sign_the_security_token() -> None:
    creds = Credentials("AKID", "SECRET", "TOKEN")
    url = f"{UPSTREAM}/model/m/converse"

    signed = sign(url, {"content-type": "application/json"}, creds)

    assert ("TOKEN", recomputed_signature(url, signed, creds)) == (
        signed["x-amz-security-token"],
        signed["authorization"].split("Signature=")[1],
    )


def test_secret_string_parses_into_credentials() -> None:
    creds = credentials_from_secret("AKID:SECRET:TOKEN")

    assert ("AKID", "SECRET", "TOKEN") == (
        creds.access_key,
        creds.secret_key,
        creds.token,
    )


def test_malformed_secret_raises_credential_error_without_echoing_it() -> None:
    with pytest.raises(CredentialError) as caught:
        credentials_from_secret("just-one-part")

    assert "just-one-part" not in str(caught.value)


def test_invoke_anthropic_body_uses_anthropic_usage() -> None:
    body = {
        "type": "message",
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 3, "cache_read_input_tokens": 4, "output_tokens": 2},
    }

    reading = meter(
        "/model/anthropic.claude-v1/invoke",
        json.dumps(body).encode(),
        "application/json",
    )

    assert Usage(7, 2, 4) == reading.usage


def test_invoke_stream_anthropic_events_take_anthropic_usage() -> None:
    body = (
        chunk(
            {
                "type": "message_start",
                "message": {"usage": {"input_tokens": 9, "output_tokens": 1}},
            }
        )
        + chunk({"type": "message_delta", "delta": {}, "usage": {"output_tokens": 4}})
        + chunk(
            {
                "type": "message_stop",
                "amazon-bedrock-invocationMetrics": {
                    "inputTokenCount": 100,
                    "outputTokenCount": 100,
                },
            }
        )
    )

    reading = meter(
        "/model/anthropic.claude-v1/invoke-with-response-stream",
        body,
        "application/vnd.amazon.eventstream",
    )

    assert (Usage(9, 4), None) == (reading.usage, reading.problem)


def test_invoke_stream_falls_back_to_invocation_metrics() -> None:
    body = chunk({"generation": "hi"}) + chunk(
        {
            "generation": "",
            "amazon-bedrock-invocationMetrics": {
                "inputTokenCount": 5,
                "outputTokenCount": 6,
            },
        }
    )

    reading = meter(
        "/model/meta.llama3/invoke-with-response-stream",
        body,
        "application/vnd.amazon.eventstream",
    )

    assert Usage(5, 6) == reading.usage


def test_exception_frame_is_a_problem() -> None:
    headers = {
        ":message-type": "exception",
        ":exception-type": "throttlingException",
        ":content-type": "application/json",
    }
    body = frame(headers, {"message": "Too many requests"})

    reading = meter(
        "/model/m/converse-stream", body, "application/vnd.amazon.eventstream"
    )

    assert reading.problem.startswith("error: throttlingException: Too many requests")


def test_corrupt_frame_is_a_problem_not_an_exception() -> None:
    body = bytearray(
        frame({":message-type": "event", ":event-type": "metadata"}, {"usage": {}})
    )
    body[-1] ^= 0xFF

    reading = meter(
        "/model/m/converse-stream",
        bytes(body),
        "application/vnd.amazon.eventstream",
        step=1000,
    )

    assert "event stream corrupt: ChecksumMismatch" == reading.problem


def test_frames_after_a_corrupt_one_count_as_unread() -> None:
    good = frame(
        {":message-type": "event", ":event-type": "contentBlockDelta"},
        {"delta": {"text": "Hi"}},
    )
    corrupt = bytearray(good)
    corrupt[-1] ^= 0xFF

    reading = meter(
        "/model/m/converse-stream",
        good + bytes(corrupt) + good,
        "application/vnd.amazon.eventstream",
        step=len(good),
    )

    assert (2, 2 * len(good)) == (reading.text_chars, reading.unread_chars)


def test_frame_cut_in_its_middle_counts_as_unread() -> None:
    whole = frame(
        {":message-type": "event", ":event-type": "contentBlockDelta"},
        {"delta": {"text": "Hi"}},
    )

    reading = meter(
        "/model/m/converse-stream",
        whole + whole[:30],
        "application/vnd.amazon.eventstream",
    )

    assert (2, 30) == (reading.text_chars, reading.unread_chars)


def test_titan_invoke_stream_counts_its_output_text() -> None:
    body = chunk({"outputText": "Hello", "index": 0, "totalOutputTextTokenCount": 2})

    reading = meter(
        "/model/amazon.titan-text-express-v1/invoke-with-response-stream",
        body,
        "application/vnd.amazon.eventstream",
    )

    assert 5 == reading.text_chars


def test_error_body_is_a_bare_message() -> None:
    assert {"message": "Over budget."} == json.loads(
        BEDROCK.error_body(429, "budget_exceeded", "Over budget.")
    )


def test_error_type_names_the_aws_exception() -> None:
    assert "ThrottlingException" == BEDROCK.error_type(429)


def test_chunk_with_bad_base64_is_unparseable_data_not_a_fault() -> None:
    headers = {":event-type": "chunk", ":message-type": "event"}
    body = frame(headers, {"bytes": "@@not base64@@"})

    reading = meter(
        "/model/m/invoke-with-response-stream",
        body,
        "application/vnd.amazon.eventstream",
    )

    assert reading.problem.startswith("unparseable event data")


def test_invoke_of_an_openai_model_reads_its_chat_completion_usage() -> None:
    path = "/model/openai.gpt-oss-120b-1:0/invoke"
    endpoint = BEDROCK.endpoint_for("POST", path)
    reader = BEDROCK.open_reader(
        endpoint, streaming=False, content_type="application/json"
    )
    reader.feed(
        b'{"object":"chat.completion","choices":[{"message":{"content":"hi"}}],'
        b'"usage":{"prompt_tokens":85,"completion_tokens":40,"total_tokens":125}}'
    )

    usage = reader.finish().usage
    assert (85, 40) == (usage.input_tokens, usage.output_tokens)


def test_usage_headers_of_invoke_model_count_cache_in_the_input() -> None:
    usage = BEDROCK.header_usage(
        {
            "x-amzn-bedrock-input-token-count": "12",
            "x-amzn-bedrock-output-token-count": "30",
            "x-amzn-bedrock-cache-read-input-token-count": "1000",
        }
    )

    assert Usage(1012, 30, cache_read_tokens=1000) == usage


@pytest.mark.parametrize("value", ["", "many", "-3"])
def test_missing_or_malformed_usage_headers_give_no_usage(value) -> None:
    assert None is BEDROCK.header_usage({"x-amzn-bedrock-input-token-count": value})


def test_converse_one_hour_cache_writes_come_from_cache_details() -> None:
    usage = {
        "inputTokens": 10,
        "outputTokens": 5,
        "totalTokens": 3015,
        "cacheWriteInputTokens": 3000,
        "cacheDetails": [
            {"ttl": "1h", "inputTokens": 2000},
            {"ttl": "5m", "inputTokens": 1000},
        ],
    }
    body = {"output": {"message": {}}, "stopReason": "end_turn", "usage": usage}

    reading = meter(
        "/model/m/converse", json.dumps(body).encode(), "application/json", step=64
    )

    assert Usage(3010, 5, 0, 3000, 2000) == reading.usage


def test_converse_stream_metadata_reads_one_hour_cache_writes() -> None:
    usage = {
        "inputTokens": 10,
        "outputTokens": 5,
        "cacheWriteInputTokens": 400,
        "cacheDetails": [{"ttl": "1h", "inputTokens": 400}],
    }
    headers = {":message-type": "event", ":event-type": "metadata"}

    reading = meter(
        "/model/m/converse-stream",
        frame(headers, {"usage": usage}),
        "application/vnd.amazon.eventstream",
    )

    assert 400 == reading.usage.cache_write_1h_tokens


def test_converse_stream_metadata_marks_the_stream_ended() -> None:
    headers = {":message-type": "event", ":event-type": "metadata"}
    metadata = frame(headers, {"usage": {"inputTokens": 10, "outputTokens": 5}})

    reading = meter(
        "/model/m/converse-stream", metadata, "application/vnd.amazon.eventstream"
    )

    assert (True, Usage(10, 5)) == (reading.ended, reading.usage)


def test_invocation_metrics_mark_an_invoke_stream_ended() -> None:
    metrics = {"inputTokenCount": 5, "outputTokenCount": 6}
    body = chunk({"generation": "hi", "amazon-bedrock-invocationMetrics": metrics})

    reading = meter(
        "/model/meta.llama3/invoke-with-response-stream",
        body,
        "application/vnd.amazon.eventstream",
    )

    assert True is reading.ended


def test_converse_stream_before_its_metadata_has_not_ended() -> None:
    headers = {":message-type": "event", ":event-type": "messageStop"}
    stop = frame(headers, {"stopReason": "end_turn"})

    reading = meter(
        "/model/m/converse-stream", stop, "application/vnd.amazon.eventstream"
    )

    assert False is reading.ended
