"""The ``openai`` family: OpenAI and every server that speaks its API.

Covers api.openai.com, Azure OpenAI (see ``azure_openai``), Groq, Mistral,
vLLM and other OpenAI-compatible servers. Endpoints are matched on the tail
of the path, so ``/v1/chat/completions``, ``/chat/completions``,
``/openai/v1/chat/completions`` (Groq) and
``/openai/deployments/{d}/chat/completions`` (Azure) are all ``chat``.

Operations follow the GenAI semantic conventions: chat completions and the
Responses API are both ``chat`` (the conventions tell them apart with
``openai.api.type``, not with the operation), legacy completions are
``text_completion``, embeddings are ``embeddings``.

Usage comes in two shapes that one reader handles: chat-style
(``prompt_tokens``, ``completion_tokens``) and Responses-style
(``input_tokens``, ``output_tokens``). Both already count cached input inside
the input and reasoning inside the output.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import unquote

from extproc.errors import EndpointNotAllowed
from extproc.metering.readers import (
    JsonBodyReader,
    SseReader,
    Tally,
    body_kind,
    count,
    mapping,
)
from extproc.metering.sse import SseEvent
from extproc.metering.usage import Usage
from extproc.providers._request import (
    estimate_input,
    first_cap,
    for_every_choice,
    load_object,
)
from extproc.providers.base import (
    Endpoint,
    ProviderFamily,
    RequestFacts,
    UsageReader,
)

_OPERATIONS = (  # path tail, operation; the first match wins
    ("/chat/completions", "chat"),
    ("/completions", "text_completion"),
    ("/responses", "chat"),
    ("/embeddings", "embeddings"),
)
_STREAM_USAGE_OPERATIONS = ("/chat/completions", "/completions")
_OUTPUT_CAPS = (("max_completion_tokens",), ("max_tokens",), ("max_output_tokens",))
_DEPLOYMENT = re.compile(r"/deployments/([^/]+)/")
_INCLUDE_USAGE = b'"stream_options":{"include_usage":true}'
_RESPONSE_ENDS = ("response.completed", "response.incomplete", "response.failed")
_ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def openai_usage(raw: Mapping[str, Any]) -> Usage | None:
    """Normalise a chat-style or Responses-style usage object.

    ``prompt_tokens_details.cached_tokens`` (or DeepSeek's
    ``prompt_cache_hit_tokens``) is the cache read and ``cache_write_tokens``
    (newer bodies) the cache write, both inside the input. Reasoning is None
    where the server does not break it out, except that nothing generated
    means no reasoning either (embeddings).
    """
    if "prompt_tokens" in raw or "completion_tokens" in raw:
        names = ("prompt_tokens", "completion_tokens")
        details = ("prompt_tokens_details", "completion_tokens_details")
    else:
        names = ("input_tokens", "output_tokens")
        details = ("input_tokens_details", "output_tokens_details")
    input_tokens, output_tokens = count(raw, names[0]), count(raw, names[1])
    if input_tokens is None and output_tokens is None:
        return None

    inputs, outputs = mapping(raw, details[0]), mapping(raw, details[1])
    reasoning = count(outputs, "reasoning_tokens")
    if reasoning is None and not output_tokens:
        reasoning = 0
    output_tokens = _with_unitemised_output(
        input_tokens or 0, output_tokens or 0, count(raw, "total_tokens")
    )

    return Usage(
        input_tokens=input_tokens or 0,
        output_tokens=output_tokens,
        cache_read_tokens=_cache_reads(raw, inputs),
        cache_write_tokens=count(inputs, "cache_write_tokens") or 0,
        reasoning_tokens=reasoning,
        input_audio_tokens=count(inputs, "audio_tokens") or 0,
        output_audio_tokens=count(outputs, "audio_tokens") or 0,
    )


def _cache_reads(raw: Mapping[str, Any], inputs: Mapping[str, Any]) -> int:
    """The cached part of the input. OpenAI's detail and DeepSeek's own
    counter name the same tokens, so a body that carries both counts once."""
    return max(
        count(inputs, "cached_tokens") or 0, count(raw, "prompt_cache_hit_tokens") or 0
    )


def _with_unitemised_output(
    input_tokens: int, output_tokens: int, total: int | None
) -> int:
    """The output, everything generated included.

    OpenAI counts reasoning inside ``completion_tokens``, so its total is
    prompt plus completion. Some compatible servers leave thinking out of
    the completion and put it only in the total they bill: xAI (beside a
    ``reasoning_tokens`` detail) and Gemini's OpenAI-compatible endpoint
    (with no detail at all). A total beyond prompt plus completion is that
    unitemised output.
    """
    if total is not None and total > input_tokens + output_tokens:
        return total - input_tokens
    return output_tokens


def _take_error(obj: Mapping[str, Any], tally: Tally) -> None:
    error = obj.get("error")
    if isinstance(error, Mapping):
        tally.note_error(error.get("code") or error.get("type"), error.get("message"))
    elif isinstance(error, str):
        tally.note_error(None, error)


def _take_usage(raw: Any, tally: Tally) -> None:
    if isinstance(raw, Mapping):
        usage = openai_usage(raw)
        if usage is not None:
            tally.usage = usage


def take_completion(obj: Mapping[str, Any], tally: Tally) -> None:
    """One chat or text completion, embeddings list or stream chunk.

    Usage may sit in a final chunk with no choices, in a chunk that still
    carries a choice (Mistral) or under ``x_groq.usage`` (Groq, sometimes
    beside an identical top-level copy): the top-level one wins, and the
    last one seen replaces earlier ones.
    """
    _take_error(obj, tally)
    tally.see_model(obj.get("model"))
    tally.see_service_tier(obj.get("service_tier"))
    choices = obj.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        if isinstance(choice, Mapping):
            tally.see_finish(choice.get("finish_reason"))
    tally.see_text(choices)

    usage = obj.get("usage")
    if not isinstance(usage, Mapping):
        usage = mapping(obj, "x_groq").get("usage")
    _take_usage(usage, tally)


def take_response(obj: Mapping[str, Any], tally: Tally) -> None:
    """One Responses API ``response`` object (a body or inside an event);
    its ``web_search_call`` output items are the web searches billed."""
    _take_error(obj, tally)
    tally.see_model(obj.get("model"))
    tally.see_service_tier(obj.get("service_tier"))
    status = obj.get("status")
    if status == "incomplete":
        tally.see_finish(mapping(obj, "incomplete_details").get("reason"))
    elif status in ("completed", "failed", "cancelled"):
        tally.see_finish(status)

    _take_usage(obj.get("usage"), tally)
    searches = _web_searches(obj.get("output"))
    if tally.usage is not None and searches:
        tally.usage = replace(tally.usage, web_search_requests=searches)


def _web_searches(output: Any) -> int:
    """Web search calls among a response's output items, billed per call;
    a failed one is not counted."""
    if not isinstance(output, list):
        return 0
    return sum(
        1
        for item in output
        if isinstance(item, Mapping)
        and item.get("type") == "web_search_call"
        and item.get("status") != "failed"
    )


def _take_body(obj: Any, tally: Tally) -> None:
    if not isinstance(obj, Mapping):
        tally.note("unparseable JSON body")
    elif obj.get("object") == "response":
        tally.see_text(obj.get("output"))
        take_response(obj, tally)
    else:
        take_completion(obj, tally)


def _is_usage_chunk(obj: Mapping[str, Any]) -> bool:
    """True for the usage chunk that ends a completion stream: usage with no
    choices. Only ``[DONE]`` follows it, which some servers never send."""
    return obj.get("choices") == [] and isinstance(obj.get("usage"), Mapping)


class OpenAIStreamReader(SseReader):
    """Chat / text completion chunks ending in their usage chunk and
    ``[DONE]``, or Responses API events ending in ``response.completed`` (or
    ``.incomplete``, ``.failed``); told apart by the events themselves."""

    def __init__(self) -> None:
        super().__init__()
        self._done = False
        self._responses = False

    def on_event(self, event: SseEvent) -> None:
        if event.data.strip() == "[DONE]":
            self._done = True
            self.tally.see_end()
            return
        obj = self.load(event)
        if obj is None:
            return

        kind = obj.get("type")
        if isinstance(kind, str) and kind.startswith("response."):
            self._responses = True
            self._take_response_event(kind, obj)
        elif kind == "error" and "error" not in obj:
            self.tally.note_error(obj.get("code"), obj.get("message"))
        else:
            take_completion(obj, self.tally)
            self._done = self._done or _is_usage_chunk(obj)

    def on_end(self) -> None:
        if not self._done:
            self.tally.note_cut("response.completed" if self._responses else "[DONE]")

    def _take_response_event(self, kind: str, obj: Mapping[str, Any]) -> None:
        response = mapping(obj, "response")
        if kind in _RESPONSE_ENDS:
            self._done = True
            take_response(response, self.tally)
            self.tally.see_end()
        elif kind.endswith(".delta"):
            self.tally.see_text(obj.get("delta"))
        else:
            self.tally.see_model(response.get("model"))


class OpenAIFamily(ProviderFamily):
    """OpenAI's wire format, with ``authorization: Bearer`` credentials.

    ``ask_stream_usage`` (default True) lets ``read_request`` add
    ``stream_options.include_usage`` to streaming chat and text completions;
    turn it off for a compatible server that rejects unknown fields.
    """

    name = "openai"
    model_in_body = True

    def __init__(self, *, ask_stream_usage: bool = True) -> None:
        self.ask_stream_usage = ask_stream_usage

    def endpoint_for(self, method: str, path: str) -> Endpoint | None:
        if method.upper() != "POST":
            return None
        tail = _route(path)
        for suffix, operation in _OPERATIONS:
            if tail.endswith(suffix):
                return Endpoint(family=self.name, operation=operation)

        return None

    def read_request(self, endpoint: Endpoint, path: str, body: bytes) -> RequestFacts:
        """Raises ``EndpointNotAllowed`` for a background response: its
        answer is a queued stub, and its usage comes later in a read that
        the gateway passes unmetered."""
        obj = load_object(body, endpoint.operation)
        if obj.get("background") is True and _route(path).endswith("/responses"):
            raise EndpointNotAllowed(
                "a background response finishes after this call, where the "
                "gateway cannot meter it; send it without background"
            )

        model = obj.get("model")
        if not isinstance(model, str) or not model:
            model = _deployment(path)
        streaming = obj.get("stream") is True
        rewrite = None
        if (
            streaming
            and self.ask_stream_usage
            and _route(path).endswith(_STREAM_USAGE_OPERATIONS)
        ):
            rewrite = with_stream_usage(obj, body)

        return RequestFacts(
            model=model,
            streaming=streaming,
            input=estimate_input(body),
            max_output_tokens=_output_cap(endpoint, obj),
            service_tier=_service_tier(obj),
            body=rewrite,
        )

    def credential_headers(self, secret: str) -> dict[str, str]:
        return {"authorization": f"Bearer {secret}"}

    def open_reader(
        self, endpoint: Endpoint, *, streaming: bool, content_type: str
    ) -> UsageReader:
        if body_kind(content_type, streaming=streaming) == "sse":
            return OpenAIStreamReader()

        return JsonBodyReader(_take_body)

    def error_body(self, status: int, code: str, message: str) -> bytes:
        kind = _ERROR_TYPES.get(status, "invalid_request_error")
        if status >= 500:
            kind = "server_error"
        error = {"message": message, "type": kind, "param": None, "code": code}

        return json.dumps({"error": error}).encode()


def with_stream_usage(obj: Mapping[str, Any], body: bytes) -> bytes | None:
    """``body`` changed to ask for a usage chunk, or None if it already does.

    With no top-level ``stream_options`` the key is inserted right after the
    opening brace and every other byte is kept. An existing ``stream_options``
    without ``include_usage: true`` cannot be patched in place safely, so the
    object is serialised again (compact, non-ASCII kept).
    """
    options = obj.get("stream_options")
    if isinstance(options, Mapping) and options.get("include_usage") is True:
        return None

    if "stream_options" not in obj:
        brace = _opening_brace(body)
        separator = b"," if len(obj) else b""
        return body[: brace + 1] + _INCLUDE_USAGE + separator + body[brace + 1 :]

    patched = dict(obj)
    patched["stream_options"] = {
        **(options if isinstance(options, Mapping) else {}),
        "include_usage": True,
    }

    return json.dumps(patched, ensure_ascii=False, separators=(",", ":")).encode()


def _opening_brace(body: bytes) -> int:
    start = 3 if body.startswith(b"\xef\xbb\xbf") else 0
    while body[start : start + 1] in (b" ", b"\t", b"\r", b"\n"):
        start += 1

    return start


def _output_cap(endpoint: Endpoint, obj: Mapping[str, Any]) -> int | None:
    if endpoint.operation == "embeddings":
        return 0

    return for_every_choice(first_cap(obj, _OUTPUT_CAPS), obj)


def _service_tier(obj: Mapping[str, Any]) -> str | None:
    """The tier asked for (``priority`` costs about twice ``default``,
    ``flex`` half); ``auto`` names none, the answer says which served."""
    tier = obj.get("service_tier")

    return tier if isinstance(tier, str) and tier != "auto" else None


def _route(path: str) -> str:
    return path.split("?", 1)[0].rstrip("/")


def _deployment(path: str) -> str | None:
    found = _DEPLOYMENT.search(_route(path))

    return unquote(found.group(1)) if found else None
