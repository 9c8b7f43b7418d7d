"""The ``gemini`` and ``vertex`` families: Google's generateContent API.

Gemini API paths: ``/v1beta/models/{model}:{method}``; Vertex AI paths:
``/v1/projects/{p}/locations/{l}/publishers/google/models/{model}:{method}``.
The model comes from the path. Methods: ``generateContent`` and
``streamGenerateContent`` (operation ``generate_content``, as the GenAI
semantic conventions name it), ``embedContent`` and ``batchEmbedContents``
(``embeddings``), ``countTokens`` (free).

A stream is SSE with ``alt=sse``; without it Gemini streams one JSON array
whose elements arrive over time, read element by element here. Every chunk
carries cumulative ``usageMetadata``: each counter keeps its largest value
(a last chunk that leaves a count out has not undone it).

Usage: ``promptTokenCount`` already includes ``cachedContentTokenCount``;
``toolUsePromptTokenCount`` is input too. ``candidatesTokenCount`` excludes
``thoughtsTokenCount``, so output is their sum and reasoning is the thoughts.
Google's JSON omits zero counters, so an absent counter is zero.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import unquote

from extproc.metering.readers import (
    FreeReader,
    JsonBodyReader,
    JsonSequenceReader,
    SseReader,
    Tally,
    body_kind,
    count,
    count_where,
    mapping,
)
from extproc.metering.sse import SseEvent
from extproc.metering.usage import Usage
from extproc.providers._request import estimate_input, first_cap, load_object
from extproc.providers.anthropic import AnthropicFamily
from extproc.providers.base import (
    Endpoint,
    ProviderFamily,
    RequestFacts,
    UsageReader,
)

_PATH = re.compile(r"/(?:models|tunedModels)/(?P<model>[^/:]+):(?P<method>\w+)$")
_METHODS = {  # method: (operation, billable, streaming)
    "generateContent": ("generate_content", True, False),
    "streamGenerateContent": ("generate_content", True, True),
    "embedContent": ("embeddings", True, False),
    "batchEmbedContents": ("embeddings", True, False),
    "countTokens": ("count_tokens", False, False),
}
# Google's JSON mapping accepts both lowerCamelCase and snake_case fields.
_OUTPUT_CAPS = (
    ("generationConfig", "maxOutputTokens"),
    ("generation_config", "max_output_tokens"),
)
_CANDIDATE_COUNTS = (
    ("generationConfig", "candidateCount"),
    ("generation_config", "candidate_count"),
)
_COUNTERS = ("promptTokenCount", "candidatesTokenCount", "totalTokenCount")
_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    503: "UNAVAILABLE",
}


def gemini_usage(meta: Mapping[str, Any]) -> Usage | None:
    """Normalise ``usageMetadata`` (None when it holds no counter at all)."""
    if not any(key in meta for key in _COUNTERS):
        return None

    thoughts = count(meta, "thoughtsTokenCount") or 0
    prompt = count(meta, "promptTokenCount") or 0

    return Usage(
        input_tokens=prompt + (count(meta, "toolUsePromptTokenCount") or 0),
        output_tokens=(count(meta, "candidatesTokenCount") or 0) + thoughts,
        cache_read_tokens=count(meta, "cachedContentTokenCount") or 0,
        reasoning_tokens=thoughts,
        # Per-modality breakdowns: audio is dearer than text.
        input_audio_tokens=_audio(meta, "promptTokensDetails"),
        output_audio_tokens=_audio(meta, "candidatesTokensDetails"),
    )


def _audio(meta: Mapping[str, Any], breakdown: str) -> int:
    return count_where(meta.get(breakdown), "tokenCount", modality="AUDIO")


def take_chunk(obj: Any, tally: Tally) -> None:
    """A whole response, one stream chunk, or an error body."""
    if not isinstance(obj, Mapping):
        tally.note("unparseable JSON body")
        return
    error = obj.get("error")
    if isinstance(error, Mapping):
        tally.note_error(error.get("status") or error.get("code"), error.get("message"))

    tally.see_model(obj.get("modelVersion"))
    candidates = obj.get("candidates")
    for candidate in candidates if isinstance(candidates, list) else ():
        if isinstance(candidate, Mapping):
            tally.see_finish(candidate.get("finishReason"))
    tally.see_text(candidates)
    tally.see_finish(mapping(obj, "promptFeedback").get("blockReason"))

    usage = gemini_usage(mapping(obj, "usageMetadata"))
    if usage is not None:
        tally.usage = usage.at_least(tally.usage)


def _note_cut(tally: Tally) -> None:
    if not tally.finish_reasons and not tally.problems:
        tally.note_cut("a finishReason")


class GeminiSseReader(SseReader):
    """``streamGenerateContent?alt=sse``: one response chunk per event."""

    def on_event(self, event: SseEvent) -> None:
        obj = self.load(event)
        if obj is not None:
            take_chunk(obj, self.tally)

    def on_end(self) -> None:
        _note_cut(self.tally)


class GeminiArrayReader(JsonSequenceReader):
    """``streamGenerateContent`` without ``alt=sse``: a streamed JSON array
    (or a single error object)."""

    def on_object(self, obj: dict[str, Any]) -> None:
        take_chunk(obj, self.tally)

    def on_end(self) -> None:
        _note_cut(self.tally)


class GeminiFamily(ProviderFamily):
    """The Gemini API with ``x-goog-api-key`` credentials.

    Gemini also accepts a key in the ``key`` query parameter; the flow must
    strip it from client requests like any credential header.
    """

    name = "gemini"

    def endpoint_for(self, method: str, path: str) -> Endpoint | None:
        found = _PATH.search(path.split("?", 1)[0])
        if method.upper() != "POST" or found is None:
            return None
        known = _METHODS.get(found.group("method"))
        if known is None:
            return None

        operation, billable, streaming = known
        return Endpoint(self.name, operation, billable=billable, streaming=streaming)

    def read_request(self, endpoint: Endpoint, path: str, body: bytes) -> RequestFacts:
        obj = load_object(body, endpoint.operation)

        found = _PATH.search(path.split("?", 1)[0])
        cap = first_cap(obj, _OUTPUT_CAPS)
        if cap is not None:
            cap *= first_cap(obj, _CANDIDATE_COUNTS) or 1
        if endpoint.operation != "generate_content":
            cap = 0

        return RequestFacts(
            model=unquote(found.group("model")) if found else None,
            streaming=bool(endpoint.streaming),
            input=estimate_input(body),
            max_output_tokens=cap,
        )

    def credential_headers(self, secret: str) -> dict[str, str]:
        return {"x-goog-api-key": secret}

    def open_reader(
        self, endpoint: Endpoint, *, streaming: bool, content_type: str
    ) -> UsageReader:
        if not endpoint.billable:
            return FreeReader()
        streamed = streaming or bool(endpoint.streaming)
        kind = body_kind(content_type, streaming=streamed)
        if kind == "sse":
            return GeminiSseReader()
        if streamed:
            return GeminiArrayReader()

        return JsonBodyReader(take_chunk, tail_keys=("usageMetadata",))

    def error_body(self, status: int, code: str, message: str) -> bytes:
        reason = {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": code,
            "domain": "tollgate",
        }
        error = {
            "code": status,
            "message": message,
            "status": _STATUSES.get(status, "INTERNAL" if status >= 500 else "UNKNOWN"),
            "details": [reason],
        }

        return json.dumps({"error": error}).encode()


class VertexFamily(GeminiFamily):
    """Vertex AI, with an OAuth ``Bearer`` access token: Google's Gemini
    endpoints, and Anthropic's Claude models as Vertex serves them.

    Claude on Vertex (``/publishers/anthropic/models/{model}:rawPredict``
    and ``:streamRawPredict``, which coding agents configured for Vertex
    use) takes and answers Anthropic's Messages format with the model in
    the path; ``count-tokens:rawPredict`` is free. Those endpoints carry
    ``family="anthropic"`` and are read with the Anthropic family's code.
    """

    name = "vertex"

    def endpoint_for(self, method: str, path: str) -> Endpoint | None:
        found = _CLAUDE_PATH.search(path.split("?", 1)[0])
        if found is None:
            return super().endpoint_for(method, path)
        if method.upper() != "POST":
            return None
        if found.group("model") == "count-tokens":
            return Endpoint("anthropic", "count_tokens", billable=False)
        streaming = found.group("method") == "streamRawPredict"
        return Endpoint("anthropic", "chat", streaming=streaming)

    def read_request(self, endpoint: Endpoint, path: str, body: bytes) -> RequestFacts:
        if endpoint.family != "anthropic":
            return super().read_request(endpoint, path, body)
        facts = _ANTHROPIC.read_request(endpoint, path, body)
        found = _CLAUDE_PATH.search(path.split("?", 1)[0])
        model = unquote(found.group("model")) if found else None
        streaming = facts.streaming or bool(endpoint.streaming)
        return replace(facts, model=model, streaming=streaming)

    def open_reader(
        self, endpoint: Endpoint, *, streaming: bool, content_type: str
    ) -> UsageReader:
        if endpoint.family != "anthropic":
            return super().open_reader(
                endpoint, streaming=streaming, content_type=content_type
            )
        return _ANTHROPIC.open_reader(
            endpoint,
            streaming=streaming or bool(endpoint.streaming),
            content_type=content_type,
        )

    def credential_headers(self, secret: str) -> dict[str, str]:
        return {"authorization": f"Bearer {secret}"}


_ANTHROPIC = AnthropicFamily()
_CLAUDE_PATH = re.compile(
    r"/publishers/anthropic/models/(?P<model>[^/:]+)"
    r":(?P<method>rawPredict|streamRawPredict)$"
)
