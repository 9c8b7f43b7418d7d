"""The whole gateway end to end: admit, swap credentials, forward, meter, settle."""

from __future__ import annotations

import gzip
import json
import time
from datetime import datetime
from decimal import ROUND_CEILING, Decimal
from pathlib import Path

import botocore.auth
import genai_prices
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.e2e.conftest import GEMINI_KEY, PROVIDER_ENV
from tests.e2e.harness import (
    FIXTURES,
    GZIP_HEADER,
    MINTED_TOKEN,
    REPLAY_HEADER,
    fixture_body,
    meta,
)
from tests.provider_fixtures import WEB_SEARCHES

pytestmark = pytest.mark.e2e

PREFIX_OF = {
    "openai": "/openai",
    "anthropic": "/anthropic",
    "google-gemini": "/gemini",
    "google-vertex-ai": "/vertex",
    "azure-openai": "/azure",
    "aws-bedrock": "/bedrock",
    "groq": "/groq",
    "mistral": "/mistral",
    "vllm (via Crusoe Cloud managed inference)": "/vllm",
}
# Rates the e2e policy sets for first-party models (USD per million tokens).
POLICY_RATES = {
    "zai/GLM-5.2": (Decimal("0.40"), Decimal("1.20"), Decimal("0.40")),
    "meta-llama/Llama-3.3-70B-Instruct": (
        Decimal("0.20"),
        Decimal("0.60"),
        Decimal("0.05"),
    ),
}


def _fixtures_with_usage(provider: str) -> list[str]:
    names = []
    for path in sorted(FIXTURES.glob("*.meta.json")):
        info = json.loads(path.read_text())
        expected = info.get("expected_usage") or {}
        if info["provider"] == provider and (expected.get("total_tokens") or 0) > 0:
            names.append(path.name.removesuffix(".meta.json"))
    return names


def _model(info: dict) -> str:
    return info.get("response_model") or info["request_model"].split(" ")[0]


def _requested(info: dict) -> str:
    return info["request_model"].split(" ")[0]


def _path(info: dict) -> str:
    endpoint = info["endpoint"].split(" ", 1)[1].split(" ")[0]
    endpoint = (
        endpoint.replace(
            "{deployment}", _requested(info).replace("model-router", "gpt-4o")
        )
        .replace("{modelId}", _requested(info))
        .replace("{project}", "proj")
    )
    return PREFIX_OF[info["provider"]] + endpoint


def _request_body(info: dict) -> dict:
    body = {
        "model": _model(info),
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "hello"}],
    }
    if info["streaming"]:
        body["stream"] = True
    if "/embeddings" in info["endpoint"]:
        body = {"model": _model(info), "input": "hello"}
    if "/responses" in info["endpoint"]:
        body = {"model": _model(info), "input": "hello", "stream": info["streaming"]}
    if info["provider"] in ("google-gemini", "google-vertex-ai"):
        body = {
            "contents": [{"parts": [{"text": "hello"}]}],
            "generationConfig": {"maxOutputTokens": 256},
        }
    if info["provider"] == "aws-bedrock":
        body = {
            "messages": [{"role": "user", "content": [{"text": "hello"}]}],
            "inferenceConfig": {"maxTokens": 256},
        }
    if info["provider"] == "azure-openai":
        body.pop("model")
    return body


LIBRARY_PROVIDER = {
    "google-gemini": "google",
    "google-vertex-ai": "google",
    "azure-openai": "azure",
    "aws-bedrock": "aws",
}


def _expected_cost(info: dict) -> int:
    """The fixture's expected usage priced independently of the gateway: by
    genai-prices, or by the policy's own rates for first-party models."""
    expected = info["expected_usage"]
    cache_read = expected.get("cached_read_input_tokens") or 0
    cache_write = expected.get("cache_creation_input_tokens") or 0
    if _model(info) in POLICY_RATES:
        rate_in, rate_out, rate_cached = POLICY_RATES[_model(info)]
        micro = (
            (expected["input_tokens"] - cache_read) * rate_in
            + cache_read * rate_cached
            + expected["output_tokens"] * rate_out
        )
        return int(micro.to_integral_value(rounding=ROUND_CEILING))
    searches = WEB_SEARCHES.get(Path(info["file"]).stem, 0)
    usage = genai_prices.Usage(
        input_tokens=expected["input_tokens"],
        output_tokens=expected["output_tokens"],
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        **({"web_searches": searches} if searches else {}),
    )
    provider = LIBRARY_PROVIDER.get(info["provider"], info["provider"])
    model = _model(info) if info["provider"] != "aws-bedrock" else _requested(info)
    price = genai_prices.calc_price(usage, model, provider_id=provider)
    micro = (price.total_price * 1_000_000).to_integral_value(rounding=ROUND_CEILING)
    return int(micro)


def _send(gateway, name: str, identity: str, **extra_headers: str):
    info = meta(name)
    headers = {"x-tollgate-identity": identity, REPLAY_HEADER: name, **extra_headers}
    return info, gateway.client.post(_path(info), _request_body(info), headers)


@pytest.mark.parametrize(
    "name", [name for provider in PREFIX_OF for name in _fixtures_with_usage(provider)]
)
def test_recorded_spend_equals_priced_expected_usage(gateway, identity, name) -> None:
    info, response = _send(gateway, name, identity)

    assert info["http_status"] == response.status
    assert fixture_body(name) == response.body
    settlement = gateway.ledger.settlement(response.headers["x-tollgate-request-id"])
    assert "metered" == settlement["outcome"]
    assert _expected_cost(info) == settlement["cost_micro_usd"]


def test_upstream_sees_gateway_key_and_never_the_clients(gateway, identity) -> None:
    name = "openai_chat_nonstream_docs_default"

    _send(
        gateway,
        name,
        identity,
        authorization="Bearer sk-client-own-key",
        **{"x-api-key": "client-x-api-key", "api-key": "client-azure-key"},
    )

    seen = gateway.standin.requests[-1].headers
    assert f"Bearer {gateway.openai_key}" == seen["authorization"]
    assert "x-api-key" not in seen and "api-key" not in seen
    assert "x-tollgate-identity" not in seen
    assert "sk-client-own-key" not in json.dumps(seen)


def test_billing_steering_and_internal_headers_stay_at_the_gateway(
    gateway, identity
) -> None:
    _send(
        gateway,
        "openai_chat_nonstream_docs_default",
        identity,
        **{
            "openai-organization": "org-client",
            "openai-project": "proj-client",
            "x-amz-signature": "client-signature",
            "x-tollgate-tool": "secret-tool",
            "x-tollgate-attribution": "customer=acme",
            "x-tollgate-request-id": "spoofed",
            "X-Tollgate-Anything": "gateway namespace",
            "x-http-method-override": "DELETE",
        },
    )

    seen = gateway.standin.requests[-1].headers
    assert set() == {
        "openai-organization",
        "openai-project",
        "x-amz-signature",
        "x-tollgate-tool",
        "x-tollgate-attribution",
        "x-tollgate-request-id",
        "x-tollgate-anything",
        "x-http-method-override",
    } & {name.lower() for name in seen}


def test_anthropic_key_comes_from_its_file(gateway, identity) -> None:
    _send(
        gateway,
        "anthropic_messages_nonstream_cache",
        identity,
        **{"x-api-key": "client-anthropic-key"},
    )

    seen = gateway.standin.requests[-1].headers
    assert gateway.anthropic_key == seen["x-api-key"]
    assert "authorization" not in seen


def test_gateway_key_never_reaches_the_client(gateway, identity) -> None:
    info, response = _send(gateway, "openai_chat_nonstream_docs_default", identity)

    text = json.dumps(response.headers) + response.body.decode()
    assert gateway.openai_key not in text


def test_openai_stream_without_usage_request_is_asked_for_usage(
    gateway, identity
) -> None:
    name = "openai_chat_stream_include_usage"
    info = meta(name)
    body = json.dumps(
        {
            "model": "gpt-4o-mini",
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
        }
    ).encode()

    gateway.client.post(
        _path(info), body, {"x-tollgate-identity": identity, REPLAY_HEADER: name}
    )

    sent = gateway.standin.requests[-1]
    assert {"include_usage": True} == json.loads(sent.body)["stream_options"]
    assert str(len(sent.body)) == sent.headers["content-length"]


def test_stream_arrives_in_pieces_not_held_back(gateway, identity) -> None:
    info, response = _send(gateway, "anthropic_messages_stream_sdk_tool_use", identity)

    assert 200 == response.status
    assert response.reads > 3


@pytest.mark.parametrize(
    "name", ["openai_chat_nonstream_cache_read", "openai_responses_stream_basic"]
)
def test_gzip_response_reaches_client_unchanged_and_is_metered(
    gateway, identity, name
) -> None:
    info, response = _send(gateway, name, identity, **{GZIP_HEADER: "1"})

    assert b"\x1f\x8b" == response.body[:2]
    assert fixture_body(name) == gzip.decompress(response.body)
    settlement = gateway.ledger.settlement(response.headers["x-tollgate-request-id"])
    assert ("metered", _expected_cost(info)) == (
        settlement["outcome"],
        settlement["cost_micro_usd"],
    )


def test_missing_identity_gets_json_401_naming_the_header(gateway) -> None:
    response = gateway.client.post(
        "/openai/v1/chat/completions",
        {"model": "gpt-4o"},
        {REPLAY_HEADER: "openai_chat_nonstream_docs_default"},
    )

    assert 401 == response.status
    assert "x-tollgate-identity" in response.json()["error"]["message"]


def _drain(gateway, identity: str) -> None:
    """Leave ``identity``'s default budget empty, as after heavy use."""
    gateway.ledger.client.hset(
        gateway.ledger.prefix + f"bucket:user:{identity}",
        mapping={
            "level": 0,
            "ts": int(time.time() * 1000),
            "cap": 1_000_000_000,
            "period": "",
        },
    )


def test_spent_budget_gets_429_and_upstream_is_not_called(
    gateway, identity, standin_calls
) -> None:
    _drain(gateway, identity)

    info, response = _send(gateway, "openai_chat_nonstream_docs_default", identity)

    assert 429 == response.status
    assert int(response.headers["retry-after"]) >= 1
    assert "budget_exceeded" == response.json()["error"]["code"]
    assert f"user:{identity}" in response.json()["error"]["message"]
    assert 0 == standin_calls()


def test_anthropic_refusal_is_in_anthropics_error_shape(gateway) -> None:
    info, response = _send(
        gateway, "anthropic_messages_nonstream_cache", "nearly-broke"
    )

    assert 429 == response.status
    assert "error" == response.json()["type"]


def test_one_mebibyte_request_body_passes(gateway, identity) -> None:
    name = "openai_chat_nonstream_docs_default"
    info = meta(name)
    body = _request_body(info)
    body["messages"][0]["content"] = "x" * (1024 * 1024)

    response = gateway.client.post(
        _path(info), body, {"x-tollgate-identity": identity, REPLAY_HEADER: name}
    )

    assert 200 == response.status
    assert len(gateway.standin.requests[-1].body) > 1024 * 1024


def test_stream_without_usage_is_charged_an_estimate_not_zero(
    gateway, identity
) -> None:
    info, response = _send(gateway, "openai_chat_stream_no_usage", identity)

    settlement = gateway.ledger.settlement(response.headers["x-tollgate-request-id"])
    assert "estimated_no_usage" == settlement["outcome"]
    assert settlement["cost_micro_usd"] > 0


@pytest.mark.parametrize(
    "name",
    [
        "openai_error_401_invalid_api_key",
        "openai_error_404_model_not_found",
        "openai_error_429_rate_limit",
        "anthropic_error_529_overloaded",
        "anthropic_stream_error_overloaded",
    ],
)
def test_upstream_error_without_usage_is_not_charged(gateway, identity, name) -> None:
    info, response = _send(gateway, name, identity)

    assert info["http_status"] == response.status
    assert fixture_body(name) == response.body
    settlement = gateway.ledger.settlement(response.headers["x-tollgate-request-id"])
    assert ("upstream_error", 0) == (
        settlement["outcome"],
        settlement["cost_micro_usd"],
    )


def test_unknown_route_gets_404_listing_prefixes(gateway, identity) -> None:
    response = gateway.client.post(
        "/nowhere/v1/chat", {}, {"x-tollgate-identity": identity}
    )

    assert 404 == response.status
    assert "/openai" in response.json()["error"]["message"]


def test_invalid_json_gets_400_and_upstream_is_not_called(gateway, identity) -> None:
    before = len(gateway.standin.requests)

    response = gateway.client.post(
        "/openai/v1/chat/completions", b"{not json", {"x-tollgate-identity": identity}
    )

    assert 400 == response.status
    assert before == len(gateway.standin.requests)


def test_repeated_identity_header_is_refused(gateway, standin_calls) -> None:
    headers = [
        ("x-tollgate-identity", "alice"),
        ("x-tollgate-identity", "bob"),
        ("content-type", "application/json"),
    ]

    response = gateway.client.send(
        "POST",
        "/openai/v1/chat/completions",
        headers,
        json.dumps({"model": "gpt-4o"}).encode(),
    )

    assert 401 == response.status
    assert "identity_invalid" == response.json()["error"]["code"]
    assert 0 == standin_calls()


def test_post_without_body_is_refused(gateway, identity, standin_calls) -> None:
    response = gateway.client.send(
        "POST", "/openai/v1/chat/completions", [("x-tollgate-identity", identity)]
    )

    assert 400 == response.status
    assert 0 == standin_calls()


def test_deeply_nested_json_is_a_400_not_a_crash(gateway, identity) -> None:
    response = gateway.client.post(
        "/openai/v1/chat/completions", b"[" * 100_000, {"x-tollgate-identity": identity}
    )

    assert 400 == response.status
    assert "nests too deeply" in response.json()["error"]["message"]


def test_model_name_with_a_newline_is_refused(gateway, identity) -> None:
    body = {"model": "gpt-4o\nerror forged", "messages": []}

    response = gateway.client.post(
        "/openai/v1/chat/completions", body, {"x-tollgate-identity": identity}
    )

    assert 400 == response.status


def test_request_larger_than_the_whole_budget_has_no_retry_after(gateway) -> None:
    body = {"model": "gpt-4o", "max_tokens": 10**9, "messages": []}

    response = gateway.client.post(
        "/openai/v1/chat/completions", body, {"x-tollgate-identity": "nearly-broke"}
    )

    assert 429 == response.status
    assert "retry-after" not in response.headers
    assert "more than the whole" in response.json()["error"]["message"]


def test_get_passes_through_unmetered_but_logged(gateway, identity) -> None:
    response = gateway.client.send(
        "GET",
        "/openai/v1/models",
        [("x-tollgate-identity", identity), (REPLAY_HEADER, "openai_embeddings")],
    )

    assert 200 == response.status
    request_id = response.headers["x-tollgate-request-id"]
    assert [] == gateway.ledger.entries(request_id)
    log = gateway.extproc.log_path.read_text()
    assert "passed through unmetered" in log and identity in log


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("DELETE", "/openai/v1/files/file-abc123", b""),
        ("GET", "/openai/v1/chat/completions", b'{"model":"gpt-4o","messages":[]}'),
    ],
)
def test_a_delete_or_a_read_with_a_body_is_not_passed_unmetered(
    gateway, identity, method, path, body
) -> None:
    before = len(gateway.standin.requests)

    response = gateway.client.send(
        method, path, [("x-tollgate-identity", identity)], body
    )

    assert (403, before) == (response.status, len(gateway.standin.requests))
    assert "endpoint_not_metered" == response.json()["error"]["code"]


def test_gemini_key_in_the_query_is_replaced_by_the_gateways(gateway, identity) -> None:
    name = "gemini_stream_generate_content_sse"
    path = "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?key=AIza-client&alt=sse"

    response = gateway.client.post(
        path,
        {"contents": []},
        {
            "x-tollgate-identity": identity,
            REPLAY_HEADER: name,
            "x-goog-api-key": "AIza-client-header",
        },
    )

    seen = gateway.standin.requests[-1]
    assert 200 == response.status
    assert "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse" == seen.path
    assert GEMINI_KEY == seen.headers["x-goog-api-key"]


def test_bedrock_request_is_signed_for_the_host_actually_sent(
    gateway, identity, monkeypatch
) -> None:
    name = "bedrock_converse_cache_read"
    info = meta(name)
    _send(gateway, name, identity, authorization="AWS4-HMAC-SHA256 client-forged")
    time.sleep(1.1)  # a recomputation in the same second could hide a clock mix-up

    seen = gateway.standin.requests[-1]
    access_key, secret_key = PROVIDER_ENV["E2E_AWS_KEYS"].split(":")
    host = seen.headers["host"]
    assert "bedrock-runtime.us-east-1.amazonaws.com" == host
    replay = AWSRequest(
        method="POST",
        url=f"https://{host}{seen.path}",
        data=seen.body,
        headers={"content-type": seen.headers["content-type"]},
    )
    signed_at = datetime.strptime(seen.headers["x-amz-date"], "%Y%m%dT%H%M%SZ")
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: signed_at)
    SigV4Auth(Credentials(access_key, secret_key), "bedrock", "us-east-1").add_auth(
        replay
    )
    assert replay.headers["authorization"] == seen.headers["authorization"]
    assert f"Credential={access_key}/" in seen.headers["authorization"]
    assert info["http_status"] == 200


@pytest.mark.parametrize(
    ("name", "header", "value"),
    [
        ("azure_openai_chat_nonstream", "api-key", PROVIDER_ENV["E2E_AZURE_KEY"]),
        ("vertex_gemini_stream_sse", "authorization", "Bearer " + MINTED_TOKEN),
    ],
)
def test_each_family_carries_its_credential_its_own_way(
    gateway, identity, name, header, value
) -> None:
    _send(
        gateway, name, identity, authorization="Bearer client", **{"api-key": "client"}
    )

    assert value == gateway.standin.requests[-1].headers[header]


def test_server_that_refuses_unknown_fields_gets_the_body_unchanged(
    gateway, identity
) -> None:
    name = "mistral_chat_stream_usage_in_final_chunk"
    body = json.dumps(
        {"model": "magistral-medium-latest", "stream": True, "messages": []}
    ).encode()

    gateway.client.post(
        "/mistral/v1/chat/completions",
        body,
        {"x-tollgate-identity": identity, REPLAY_HEADER: name},
    )

    assert body == gateway.standin.requests[-1].body


def test_vertex_token_is_minted_once_and_reused(gateway, identity) -> None:
    for _ in range(3):
        _send(gateway, "vertex_gemini_stream_sse", identity)

    mints = [r for r in gateway.standin.requests if r.path == "/token"]
    assert 1 == len(mints)
    assert (
        b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"
        in mints[0].body
    )


def test_identity_with_a_comma_is_refused(gateway, standin_calls) -> None:
    response = gateway.client.post(
        "/openai/v1/chat/completions",
        {"model": "gpt-4o"},
        {"x-tollgate-identity": "alice,mallory"},
    )

    assert (401, 0) == (response.status, standin_calls())


def test_rate_limit_refusal_says_rate_limited(gateway) -> None:
    gateway.ledger.client.hset(
        gateway.ledger.prefix + "bucket:user:tpm-user#tpm",
        mapping={"level": 0, "ts": int(time.time() * 1000), "cap": 1000, "period": ""},
    )

    response = gateway.client.post(
        "/openai/v1/chat/completions",
        {"model": "gpt-4o", "max_tokens": 10, "messages": []},
        {"x-tollgate-identity": "tpm-user"},
    )

    assert 429 == response.status
    assert "rate_limited" == response.json()["error"]["code"]
    assert int(response.headers["retry-after"]) >= 1


@pytest.mark.parametrize(
    ("coding", "compress"), [("gzip", gzip.compress), ("br", lambda body: body)]
)
def test_a_compressed_request_body_is_refused_for_its_coding(
    gateway, identity, standin_calls, coding, compress
) -> None:
    # Refused on the header, whatever the bytes: a body labelled compressed
    # but sent plain would reach the provider with a coding it cannot undo.
    body = json.dumps({"model": "gpt-4o-mini", "messages": []}).encode()

    response = gateway.client.post(
        "/openai/v1/chat/completions",
        compress(body),
        {"x-tollgate-identity": identity, "content-encoding": coding},
    )

    error = response.json()["error"]
    assert (415, "unsupported_encoding", "identity", 0) == (
        response.status,
        error["code"],
        response.headers.get("accept-encoding"),
        standin_calls(),
    )
    assert f"content-encoding: {coding}" in error["message"]
