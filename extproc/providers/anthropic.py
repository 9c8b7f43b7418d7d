"""The ``anthropic`` family: the Messages API.

``/v1/messages`` is ``chat``; ``/v1/messages/count_tokens`` is free
(``billable=False``). Anthropic reports input three ways: ``input_tokens``
(uncached only), ``cache_read_input_tokens`` and
``cache_creation_input_tokens``; the normalised input is their sum.
Thinking is inside ``output_tokens`` and not broken out (reasoning None).

A stream's ``message_start`` carries a first usage and ``message_delta`` the
final cumulative one, which may restate the input and cache counts: each
field takes its latest value, nothing is added.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from extproc.metering.readers import (
    FreeReader,
    JsonBodyReader,
    SseReader,
    Tally,
    body_kind,
    count,
    mapping,
)
from extproc.metering.sse import SseEvent
from extproc.metering.usage import Usage
from extproc.providers._request import estimate_input, load_object, positive_int
from extproc.providers.base import (
    Endpoint,
    ProviderFamily,
    RequestFacts,
    UsageReader,
)

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def anthropic_usage(raw: Mapping[str, Any]) -> Usage | None:
    """Normalise an Anthropic usage object (None when it has no counts).

    With server-side compaction, ``usage.iterations`` lists every model pass
    of the request (the compaction pass and the final message pass) while
    the top-level counters describe only the last pass. The iterations are
    what was consumed and billed, so their sum is the usage.
    """
    iterations = raw.get("iterations")
    if isinstance(iterations, list):
        passes = [_one_pass(i) for i in iterations if isinstance(i, Mapping)]
        summed = _sum(p for p in passes if p is not None)
        if summed is not None:
            return _with_searches(summed, raw)

    return _one_pass(raw)


def _with_searches(usage: Usage, raw: Mapping[str, Any]) -> Usage:
    """Web searches are counted for the whole request, not per pass."""
    searches = count(mapping(raw, "server_tool_use"), "web_search_requests")
    if not searches or searches <= usage.web_search_requests:
        return usage
    return replace(usage, web_search_requests=searches)


def _one_pass(raw: Mapping[str, Any]) -> Usage | None:
    uncached, output = count(raw, "input_tokens"), count(raw, "output_tokens")
    if uncached is None and output is None:
        return None

    read = count(raw, "cache_read_input_tokens") or 0
    by_ttl = mapping(raw, "cache_creation")
    write_5m = count(by_ttl, "ephemeral_5m_input_tokens") or 0
    write_1h = count(by_ttl, "ephemeral_1h_input_tokens")
    # The total, or where a body gives only the breakdown, its sum.
    write = max(
        count(raw, "cache_creation_input_tokens") or 0, write_5m + (write_1h or 0)
    )
    searches = count(mapping(raw, "server_tool_use"), "web_search_requests")

    return Usage(
        input_tokens=(uncached or 0) + read + write,
        output_tokens=output or 0,
        cache_read_tokens=read,
        cache_write_tokens=write,
        cache_write_1h_tokens=write_1h or 0,
        reasoning_tokens=None,
        web_search_requests=searches or 0,
    )


def _sum(passes: Iterable[Usage]) -> Usage | None:
    total = None
    for part in passes:
        if total is None:
            total = part
            continue
        total = Usage(
            input_tokens=total.input_tokens + part.input_tokens,
            output_tokens=total.output_tokens + part.output_tokens,
            cache_read_tokens=total.cache_read_tokens + part.cache_read_tokens,
            cache_write_tokens=total.cache_write_tokens + part.cache_write_tokens,
            cache_write_1h_tokens=(
                total.cache_write_1h_tokens + part.cache_write_1h_tokens
            ),
            reasoning_tokens=None,
            web_search_requests=total.web_search_requests + part.web_search_requests,
        )

    return total


def take_message(obj: Any, tally: Tally) -> None:
    """A whole (non-streamed) Messages response or error body."""
    if not isinstance(obj, Mapping):
        tally.note("unparseable JSON body")
        return
    if obj.get("type") == "error":
        error = mapping(obj, "error")
        tally.note_error(error.get("type"), error.get("message"))
        return

    tally.see_model(obj.get("model"))
    tally.see_finish(obj.get("stop_reason"))
    tally.see_text(obj.get("content"))
    tally.see_service_tier(mapping(obj, "usage").get("service_tier"))
    usage = anthropic_usage(mapping(obj, "usage"))
    if usage is not None:
        tally.usage = usage


class AnthropicStream:
    """Folds Messages stream events, already parsed, into a ``Tally``.

    Shared by the SSE reader and Bedrock's InvokeModel stream, which carries
    the same events inside its own framing.
    """

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.stopped = False
        self._raw: dict[str, Any] = {}

    def take(self, obj: Mapping[str, Any]) -> None:
        kind = obj.get("type")
        if kind == "message_start":
            message = mapping(obj, "message")
            self.tally.see_model(message.get("model"))
            self._merge(mapping(message, "usage"))
        elif kind == "message_delta":
            self.tally.see_finish(mapping(obj, "delta").get("stop_reason"))
            self._merge(mapping(obj, "usage"))
        elif kind == "content_block_delta":
            self.tally.see_text(obj.get("delta"))
        elif kind == "message_stop":
            self.stopped = True
            self.tally.see_end()
        elif kind == "error":
            error = mapping(obj, "error")
            self.tally.note_error(error.get("type"), error.get("message"))

    def _merge(self, usage: Mapping[str, Any]) -> None:
        _merge_counts(self._raw, usage)
        self.tally.see_service_tier(self._raw.get("service_tier"))
        merged = anthropic_usage(self._raw)
        if merged is not None:
            self.tally.usage = merged


def _merge_counts(into: dict[str, Any], usage: Mapping[str, Any]) -> None:
    """Fold a later usage object of a stream into ``into``.

    The counts of a stream are cumulative and never go down, so each counter
    keeps the larger of its values: a ``message_delta`` that restates a
    count as 0 (several compatible servers do) has not undone it. Nested
    breakdowns merge the same way; other values (the ``iterations`` list,
    the service tier) are replaced by the later one.
    """
    for key, value in usage.items():
        old = into.get(key)
        if value is None:
            continue
        if isinstance(value, Mapping) and isinstance(old, dict):
            _merge_counts(old, value)
        elif isinstance(value, Mapping):
            into[key] = dict(value)
        elif _is_count(value) and _is_count(old):
            into[key] = max(old, value)
        else:
            into[key] = value


def _is_count(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class AnthropicStreamReader(SseReader):
    """A Messages SSE stream; it should end with ``message_stop``."""

    def __init__(self) -> None:
        super().__init__()
        self._stream = AnthropicStream(self.tally)

    def on_event(self, event: SseEvent) -> None:
        obj = self.load(event)
        if obj is not None:
            self._stream.take(obj)

    def on_end(self) -> None:
        if not self._stream.stopped:
            self.tally.note_cut("message_stop")


class AnthropicFamily(ProviderFamily):
    """Anthropic's Messages API with ``x-api-key`` credentials."""

    name = "anthropic"
    model_in_body = True

    def endpoint_for(self, method: str, path: str) -> Endpoint | None:
        if method.upper() != "POST":
            return None
        tail = path.split("?", 1)[0].rstrip("/")
        if tail.endswith("/messages/count_tokens"):
            return Endpoint(self.name, "count_tokens", billable=False, streaming=False)
        if tail.endswith("/messages"):
            return Endpoint(self.name, "chat")

        return None

    def read_request(self, endpoint: Endpoint, path: str, body: bytes) -> RequestFacts:
        obj = load_object(body, endpoint.operation)

        model = obj.get("model")
        free = not endpoint.billable

        return RequestFacts(
            model=model if isinstance(model, str) and model else None,
            streaming=not free and obj.get("stream") is True,
            input=estimate_input(body),
            max_output_tokens=0 if free else positive_int(obj.get("max_tokens")),
        )

    def credential_headers(self, secret: str) -> dict[str, str]:
        return {"x-api-key": secret}

    def open_reader(
        self, endpoint: Endpoint, *, streaming: bool, content_type: str
    ) -> UsageReader:
        if not endpoint.billable:
            return FreeReader()
        if body_kind(content_type, streaming=streaming) == "sse":
            return AnthropicStreamReader()

        return JsonBodyReader(take_message)

    def error_body(self, status: int, code: str, message: str) -> bytes:
        kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "")
        error = {"type": kind or "invalid_request_error", "message": message}

        return json.dumps({"type": "error", "error": error}).encode()
