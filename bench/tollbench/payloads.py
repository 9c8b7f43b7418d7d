"""What the benchmark sends and what the stand-in providers answer.

One small OpenAI chat request, answered either as one JSON body with usage
or as a server-sent event stream whose last data event carries usage, so
that Tollgate meters a real answer on both paths. The stream request asks
for usage itself: Tollgate then leaves its body alone, and the no-op and the
floor forward exactly the same bytes.
"""

from __future__ import annotations

import json

PATH = "/openai/v1/chat/completions"
MODEL = "gpt-4o-mini"
RESPONSE_MODEL = "gpt-4o-mini-2024-07-18"
IDENTITY_HEADER = "x-tollgate-identity"
STREAM_ROUTE_HEADER = "x-bench-stream"
"""Present on stream requests: the gateway Envoys route them to the SSE
stand-in instead of the direct-response provider."""

TOOL_HEADER = "x-tollgate-tool"
TOOL = "bench-agent"
ATTRIBUTION_HEADER = "x-tollgate-attribution"
ATTRIBUTION = "workflow=bench; customer=acme"

IDENTITIES = tuple(f"bench-user-{n}" for n in range(8))
"""Requests rotate over these, so reservations touch several buckets."""

CLIENT_CREDENTIAL = "Bearer sk-client-key-that-tollgate-strips"
GATEWAY_CREDENTIAL_ENV = "BENCH_OPENAI_KEY"
GATEWAY_CREDENTIAL = "sk-bench-gateway-openai-key"

_MESSAGES = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "Write one sentence about toll roads."},
]
_WORDS = (
    "Toll",
    " roads",
    " charge",
    " drivers",
    " a",
    " fee",
    " to",
    " pay",
    " for",
    " the",
    " road",
    ".",
)


def request_body(*, stream: bool) -> bytes:
    """The chat completion request, compact JSON."""
    body: dict[str, object] = {"model": MODEL, "max_tokens": 64, "messages": _MESSAGES}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}

    return json.dumps(body, separators=(",", ":")).encode()


def request_headers(identity: str, *, stream: bool) -> dict[str, str]:
    """Headers of one call; the credential is the client's, to be replaced."""
    headers = {
        "content-type": "application/json",
        "authorization": CLIENT_CREDENTIAL,
        IDENTITY_HEADER: identity,
        TOOL_HEADER: TOOL,
        ATTRIBUTION_HEADER: ATTRIBUTION,
    }
    if stream:
        headers[STREAM_ROUTE_HEADER] = "1"

    return headers


def completion_body() -> bytes:
    """A non-streamed chat completion as OpenAI answers it, with usage."""
    body = {
        "id": "chatcmpl-bench0000000000000000000000",
        "object": "chat.completion",
        "created": 1767225600,
        "model": RESPONSE_MODEL,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "".join(_WORDS),
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(),
        "service_tier": "default",
        "system_fingerprint": "fp_bench",
    }

    return json.dumps(body, indent=2).encode() + b"\n"


def stream_events() -> list[bytes]:
    """The SSE events of a streamed completion, one bytes object each.

    A role chunk, a chunk per word, a finish chunk, the usage chunk (empty
    choices, as with ``include_usage``) and ``[DONE]``.
    """
    deltas: list[tuple[dict[str, object], object]] = [
        ({"role": "assistant", "content": "", "refusal": None}, None)
    ]
    deltas += [({"content": word}, None) for word in _WORDS]
    deltas.append(({}, "stop"))

    chunks = [
        _chunk(
            [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        )
        for delta, finish in deltas
    ]
    chunks.append(_chunk([], usage=_usage()))
    events = [b"data: " + json.dumps(chunk).encode() + b"\n\n" for chunk in chunks]
    events.append(b"data: [DONE]\n\n")

    return events


def _chunk(choices: list[dict[str, object]], usage: object = None) -> dict[str, object]:
    return {
        "id": "chatcmpl-bench0000000000000000000000",
        "object": "chat.completion.chunk",
        "created": 1767225600,
        "model": RESPONSE_MODEL,
        "system_fingerprint": "fp_bench",
        "choices": choices,
        "usage": usage,
    }


def _usage() -> dict[str, object]:
    return {
        "prompt_tokens": 24,
        "completion_tokens": len(_WORDS),
        "total_tokens": 24 + len(_WORDS),
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
