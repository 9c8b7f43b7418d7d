"""A canned provider for ``tollgate up --demo``: no key, no network, no cost.

``demo_responder`` answers in the providers' wire formats, so the whole
gateway path (identity, reservation, metering of JSON and of streams,
settlement) runs as it would against the real APIs:

- OpenAI ``POST /v1/chat/completions``: JSON, or server-sent events when
  ``"stream": true``, with a final usage chunk when
  ``stream_options.include_usage`` is true.
- OpenAI ``POST /v1/responses``: JSON, or the typed event stream.
- OpenAI ``POST /v1/embeddings``: float lists, or base64 float32 when
  ``encoding_format`` is ``base64`` (the official SDKs ask for that).
- Anthropic ``POST /v1/messages``: JSON, or message_start / content_block_*
  / message_delta / message_stop events; ``POST /v1/messages/count_tokens``.
- ``GET /v1/models``: a short model list (a read the gateway passes through
  unmetered).

The model is echoed from the request. Input tokens are about a quarter of
the request body's length; output tokens count the reply's pieces.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import struct
import time
import uuid
from collections.abc import Callable
from typing import Any

from extproc.local.standin import RecordedRequest, Reply

logger = logging.getLogger(__name__)

REPLY_TEXT = (
    "Hello from the Tollgate demo upstream. No model was called and no money "
    "was spent, but this answer was metered like a real one."
)
STREAM_CHUNK_DELAY_S = 0.02
DEFAULT_EMBEDDING_DIMENSIONS = 16
MAX_EMBEDDING_DIMENSIONS = 3072
DEMO_MODELS = ("gpt-4o-mini", "text-embedding-3-small", "claude-sonnet-4-5")

Handler = Callable[[dict[str, Any], RecordedRequest], Reply]


def demo_responder(req: RecordedRequest) -> Reply:
    """Answer ``req`` as the provider behind its path would; see the module."""
    path = req.path.split("?", 1)[0]
    handler = _HANDLERS.get(path)
    anthropic = path.startswith("/v1/messages")
    if path == "/v1/models" and req.method in ("GET", "HEAD"):
        return _model_list(anthropic="anthropic-version" in req.headers)
    if handler is None:
        return _openai_error(404, f"Unknown request URL: {req.method} {path}")
    if req.method != "POST":
        return _error_for(anthropic, 405, f"{req.method} is not allowed on {path}")

    body = _json_object(req.body)
    if body is None:
        return _error_for(anthropic, 400, "The request body is not a JSON object.")
    if not isinstance(body.get("model"), str) or not body["model"]:
        return _error_for(anthropic, 400, "You must provide a model parameter.")

    logger.debug("demo answer path=%s model=%s", path, body["model"])
    return handler(body, req)


# OpenAI chat completions


def _chat_completions(body: dict[str, Any], req: RecordedRequest) -> Reply:
    pieces = _pieces(REPLY_TEXT)
    usage = _chat_usage(_input_tokens(req), len(pieces))
    completion_id = "chatcmpl-" + _token(24)
    created = int(time.time())

    if body.get("stream") is True:
        options = body.get("stream_options") or {}
        include_usage = bool(options.get("include_usage"))
        return _sse_reply(
            _chat_events(
                body["model"], completion_id, created, pieces, usage, include_usage
            ),
            _openai_headers(),
        )

    payload = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": REPLY_TEXT,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": usage,
        "service_tier": "default",
        "system_fingerprint": "fp_tollgate_demo",
    }
    return _json_reply(200, payload, _openai_headers())


def _chat_events(
    model: str,
    completion_id: str,
    created: int,
    pieces: list[str],
    usage: dict[str, Any],
    include_usage: bool,
) -> list[bytes]:
    def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        event: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": "fp_tollgate_demo",
            "choices": choices,
        }
        if include_usage:
            # With include_usage every chunk carries "usage": null until the
            # last one, which has empty choices and the real counts.
            event["usage"] = None
        event.update(extra)
        return _data_event(event)

    def choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    events = [chunk([choice({"role": "assistant", "content": "", "refusal": None})])]
    events += [chunk([choice({"content": piece})]) for piece in pieces]
    events.append(chunk([choice({}, "stop")]))
    if include_usage:
        events.append(chunk([], usage=usage))
    events.append(b"data: [DONE]\n\n")

    return events


def _chat_usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": input_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


# OpenAI responses


def _responses(body: dict[str, Any], req: RecordedRequest) -> Reply:
    pieces = _pieces(REPLY_TEXT)
    usage = {
        "input_tokens": _input_tokens(req),
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": len(pieces),
        "output_tokens_details": {"reasoning_tokens": 0},
    }
    usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
    response_id = "resp_" + _token(32)
    message_id = "msg_" + _token(32)

    if body.get("stream") is True:
        return _sse_reply(
            _responses_events(body, response_id, message_id, pieces, usage),
            _openai_headers(),
        )

    payload = _response_object(body, response_id, "completed", usage)
    payload["output"] = [_output_message(message_id, "completed", REPLY_TEXT)]
    return _json_reply(200, payload, _openai_headers())


def _responses_events(
    body: dict[str, Any],
    response_id: str,
    message_id: str,
    pieces: list[str],
    usage: dict[str, Any],
) -> list[bytes]:
    sequence = iter(range(1_000_000))

    def event(kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": next(sequence), **fields}
        return _named_event(kind, payload)

    part_empty = {"type": "output_text", "text": "", "annotations": []}
    part_full = {"type": "output_text", "text": REPLY_TEXT, "annotations": []}
    started = _response_object(body, response_id, "in_progress", None)
    finished = _response_object(body, response_id, "completed", usage)
    finished["output"] = [_output_message(message_id, "completed", REPLY_TEXT)]

    events = [
        event("response.created", response=started),
        event("response.in_progress", response=started),
        event(
            "response.output_item.added",
            output_index=0,
            item=_output_message(message_id, "in_progress", None),
        ),
        event(
            "response.content_part.added",
            item_id=message_id,
            output_index=0,
            content_index=0,
            part=part_empty,
        ),
    ]
    events += [
        event(
            "response.output_text.delta",
            item_id=message_id,
            output_index=0,
            content_index=0,
            delta=piece,
            logprobs=[],
        )
        for piece in pieces
    ]
    events += [
        event(
            "response.output_text.done",
            item_id=message_id,
            output_index=0,
            content_index=0,
            text=REPLY_TEXT,
            logprobs=[],
        ),
        event(
            "response.content_part.done",
            item_id=message_id,
            output_index=0,
            content_index=0,
            part=part_full,
        ),
        event(
            "response.output_item.done",
            output_index=0,
            item=_output_message(message_id, "completed", REPLY_TEXT),
        ),
        event("response.completed", response=finished),
    ]

    return events


def _response_object(
    body: dict[str, Any],
    response_id: str,
    status: str,
    usage: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body["model"],
        "output": [],
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
    }


def _output_message(message_id: str, status: str, text: str | None) -> dict[str, Any]:
    content = (
        []
        if text is None
        else [{"type": "output_text", "text": text, "annotations": []}]
    )

    return {
        "type": "message",
        "id": message_id,
        "status": status,
        "role": "assistant",
        "content": content,
    }


# OpenAI embeddings


def _embeddings(body: dict[str, Any], req: RecordedRequest) -> Reply:
    inputs = _embedding_inputs(body.get("input"))
    if inputs is None:
        return _openai_error(400, "'input' must be a string or a list of them.")
    dimensions = body.get("dimensions", DEFAULT_EMBEDDING_DIMENSIONS)
    if (
        not isinstance(dimensions, int)
        or not 1 <= dimensions <= MAX_EMBEDDING_DIMENSIONS
    ):
        return _openai_error(400, "'dimensions' is out of range.")
    as_base64 = body.get("encoding_format") == "base64"

    data = [
        {
            "object": "embedding",
            "index": index,
            "embedding": _embedding(item, dimensions, as_base64),
        }
        for index, item in enumerate(inputs)
    ]
    tokens = sum(_tokens_of(item) for item in inputs)

    payload = {
        "object": "list",
        "data": data,
        "model": body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return _json_reply(200, payload, _openai_headers())


def _embedding_inputs(value: Any) -> list[Any] | None:
    # A string, a list of strings, a list of token ids, or a list of those.
    if isinstance(value, str) or _is_token_list(value):
        return [value]
    if (
        isinstance(value, list)
        and value
        and all(isinstance(item, str) or _is_token_list(item) for item in value)
    ):
        return value

    return None


def _is_token_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(item, int) for item in value)
    )


def _tokens_of(item: Any) -> int:
    if isinstance(item, list):
        return len(item)

    return max(1, len(item.encode("utf-8")) // 4)


def _embedding(item: Any, dimensions: int, as_base64: bool) -> list[float] | str:
    # Deterministic per input, unit length, so similarity demos behave.
    seed = hashlib.sha256(json.dumps(item).encode("utf-8")).digest()
    raw = [
        ((seed[i % len(seed)] + 7 * i) % 256) / 127.5 - 1.0 for i in range(dimensions)
    ]
    norm = sum(value * value for value in raw) ** 0.5 or 1.0
    vector = [round(value / norm, 6) for value in raw]

    if as_base64:
        packed = struct.pack(f"<{dimensions}f", *vector)
        return base64.b64encode(packed).decode("ascii")
    return vector


# Anthropic messages


def _messages(body: dict[str, Any], req: RecordedRequest) -> Reply:
    pieces = _pieces(REPLY_TEXT)
    input_tokens = _input_tokens(req)
    message_id = "msg_" + _token(24)

    if body.get("stream") is True:
        return _sse_reply(
            _message_events(body["model"], message_id, pieces, input_tokens),
            _anthropic_headers(),
        )

    payload = _message_object(body["model"], message_id, input_tokens, len(pieces))
    payload["content"] = [{"type": "text", "text": REPLY_TEXT}]
    payload["stop_reason"] = "end_turn"
    return _json_reply(200, payload, _anthropic_headers())


def _count_tokens(body: dict[str, Any], req: RecordedRequest) -> Reply:
    return _json_reply(200, {"input_tokens": _input_tokens(req)}, _anthropic_headers())


def _model_list(*, anthropic: bool) -> Reply:
    if anthropic:
        models = [{"type": "model", "id": m, "display_name": m} for m in DEMO_MODELS]
        payload = {"data": models, "has_more": False}
        return _json_reply(200, payload, _anthropic_headers())
    models = [{"id": m, "object": "model", "owned_by": "demo"} for m in DEMO_MODELS]
    return _json_reply(200, {"object": "list", "data": models}, _openai_headers())


def _message_events(
    model: str, message_id: str, pieces: list[str], input_tokens: int
) -> list[bytes]:
    # message_start carries the input counts and a provisional output count;
    # message_delta carries the final output count and, as the API does
    # today, restates the input and cache counts (cumulative, not added).
    start = _message_object(model, message_id, input_tokens, 1)
    final_usage = _anthropic_usage(input_tokens, len(pieces))
    final_usage.pop("service_tier")

    events = [
        _named_event("message_start", {"type": "message_start", "message": start}),
        _named_event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        _named_event("ping", {"type": "ping"}),
    ]
    events += [
        _named_event(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": piece},
            },
        )
        for piece in pieces
    ]
    events += [
        _named_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _named_event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": final_usage,
            },
        ),
        _named_event("message_stop", {"type": "message_stop"}),
    ]

    return events


def _message_object(
    model: str, message_id: str, input_tokens: int, output_tokens: int
) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _anthropic_usage(input_tokens, output_tokens),
    }


def _anthropic_usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


# Wire helpers


_HANDLERS: dict[str, Handler] = {
    "/v1/chat/completions": _chat_completions,
    "/v1/responses": _responses,
    "/v1/embeddings": _embeddings,
    "/v1/messages": _messages,
    "/v1/messages/count_tokens": _count_tokens,
}


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return None

    return value if isinstance(value, dict) else None


def _input_tokens(req: RecordedRequest) -> int:
    return max(1, len(req.body) // 4)


def _pieces(text: str) -> list[str]:
    # Word-sized pieces, trailing space attached, as token streams look.
    return re.findall(r"\S+\s*", text)


def _token(length: int) -> str:
    return uuid.uuid4().hex[:length].ljust(length, "0")


def _json_reply(status: int, payload: dict[str, Any], headers: dict[str, str]) -> Reply:
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    headers = {
        **headers,
        "content-type": "application/json",
        "content-length": str(len(body)),
    }

    return Reply(status, headers, [body])


def _sse_reply(events: list[bytes], headers: dict[str, str]) -> Reply:
    headers = {
        **headers,
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-cache",
    }

    return Reply(200, headers, events, chunk_delay_s=STREAM_CHUNK_DELAY_S)


def _data_event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _named_event(name: str, payload: dict[str, Any]) -> bytes:
    data = json.dumps(payload, separators=(",", ":")).encode()

    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


def _openai_headers() -> dict[str, str]:
    return {"x-request-id": "req_" + _token(32), "openai-processing-ms": "7"}


def _anthropic_headers() -> dict[str, str]:
    return {"request-id": "req_" + _token(24)}


def _error_for(anthropic: bool, status: int, message: str) -> Reply:
    if anthropic:
        return _anthropic_error(status, message)

    return _openai_error(status, message)


def _openai_error(status: int, message: str) -> Reply:
    payload = {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }

    return _json_reply(status, payload, _openai_headers())


def _anthropic_error(status: int, message: str) -> Reply:
    kind = {404: "not_found_error"}.get(status, "invalid_request_error")
    payload = {"type": "error", "error": {"type": kind, "message": message}}

    return _json_reply(status, payload, _anthropic_headers())
