"""The ``bedrock`` family: Amazon Bedrock Runtime, signed with SigV4.

Paths: ``/model/{modelId}/converse``, ``/converse-stream``, ``/invoke`` and
``/invoke-with-response-stream``; ``modelId`` is URL-encoded and may be a
model id, an inference-profile id or an ARN. Everything is ``chat`` except
an InvokeModel call on a model whose id names an embedding model
(``embeddings``).

Converse usage reports uncached input only: input is ``inputTokens`` plus
``cacheReadInputTokens`` plus ``cacheWriteInputTokens`` (the ``...Count``
duplicates some bodies carry are counted once). InvokeModel bodies are the
model vendor's own; Anthropic's are read with the ``anthropic`` family's
logic. Streams use AWS event-stream framing, decoded with botocore; an
InvokeModel stream wraps each vendor event, base64-encoded, in a ``chunk``
frame, and the last one adds ``amazon-bedrock-invocationMetrics``.

The credential is a SigV4 signature over the body, so ``credential_headers``
returns nothing and the flow calls ``sign`` once the body is final.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import unquote, urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials
from botocore.eventstream import EventStreamBuffer, ParserError

from extproc.errors import CredentialError
from extproc.metering.readers import (
    EventReader,
    JsonBodyReader,
    MalformedUsage,
    Tally,
    body_kind,
    count,
    count_where,
    mapping,
    short,
)
from extproc.metering.usage import Usage
from extproc.providers._request import (
    estimate_input,
    first_cap,
    for_every_choice,
    load_object,
)
from extproc.providers.anthropic import AnthropicStream, take_message
from extproc.providers.base import (
    Endpoint,
    ProviderFamily,
    RequestFacts,
    UsageReader,
)
from extproc.providers.openai import take_completion

_PATH = re.compile(
    r"/model/(?P<model>.+)/"
    r"(?P<action>converse|converse-stream|invoke|invoke-with-response-stream)$"
)
_STREAMING_ACTIONS = ("converse-stream", "invoke-with-response-stream")
# Converse, then the InvokeModel bodies of Anthropic, Amazon, Meta, Mistral,
# AI21, Cohere and OpenAI (whose n choices are each billed).
_OUTPUT_CAPS = (
    ("inferenceConfig", "maxTokens"),
    ("max_completion_tokens",),
    ("max_tokens",),
    ("inferenceConfig", "max_new_tokens"),
    ("textGenerationConfig", "maxTokenCount"),
    ("max_gen_len",),
)
_SIGNED_HEADERS = ("content-type",)  # besides host and SigV4's own x-amz-*
_METRICS = "amazon-bedrock-invocationMetrics"
_ERROR_TYPES = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    429: "ThrottlingException",
    503: "ServiceUnavailableException",
}


def _split_usage(
    raw: Mapping[str, Any],
    uncached_key: str,
    output_key: str,
    read_keys: tuple[str, ...],
    write_keys: tuple[str, ...],
) -> Usage | None:
    uncached, output = count(raw, uncached_key), count(raw, output_key)
    if uncached is None and output is None:
        return None

    read = next((n for k in read_keys if (n := count(raw, k)) is not None), 0)
    write = next((n for k in write_keys if (n := count(raw, k)) is not None), 0)

    return Usage(
        input_tokens=(uncached or 0) + read + write,
        output_tokens=output or 0,
        cache_read_tokens=read,
        cache_write_tokens=write,
        reasoning_tokens=None,
    )


def converse_usage(raw: Mapping[str, Any]) -> Usage | None:
    """Normalise a Converse (or Amazon Nova InvokeModel) usage object.

    ``cacheDetails`` breaks the cache writes down by how long they are
    held (``5m``, ``1h``); the one-hour part is dearer and priced apart.
    """
    usage = _split_usage(
        raw,
        "inputTokens",
        "outputTokens",
        ("cacheReadInputTokens", "cacheReadInputTokenCount"),
        ("cacheWriteInputTokens", "cacheWriteInputTokenCount"),
    )
    # cacheDetails: the cache writes by lifetime.
    hour_writes = count_where(raw.get("cacheDetails"), "inputTokens", ttl="1h")
    if usage is None or not hour_writes:
        return usage
    return replace(usage, cache_write_1h_tokens=hour_writes)


def metrics_usage(raw: Mapping[str, Any]) -> Usage | None:
    """Normalise ``amazon-bedrock-invocationMetrics``."""
    return _split_usage(
        raw,
        "inputTokenCount",
        "outputTokenCount",
        ("cacheReadInputTokenCount",),
        ("cacheWriteInputTokenCount",),
    )


def _vendor_usage(obj: Mapping[str, Any]) -> Usage | None:
    # Meta Llama, then Amazon Titan; other vendors put counts only in headers.
    prompt, generated = count(obj, "prompt_token_count"), None
    if prompt is not None:
        generated = count(obj, "generation_token_count")
    else:
        prompt = count(obj, "inputTextTokenCount")
        results = obj.get("results")
        if isinstance(results, list):
            generated = sum(count(r, "tokenCount") or 0 for r in results)
    if prompt is None:
        return None

    return Usage(input_tokens=prompt, output_tokens=generated or 0)


def take_body(obj: Any, tally: Tally) -> None:
    """A Converse or InvokeModel response body, or an error body."""
    if not isinstance(obj, Mapping):
        tally.note("unparseable JSON body")
        return
    usage = mapping(obj, "usage")
    if "input_tokens" in usage or obj.get("type") in ("message", "error"):
        take_message(obj, tally)
        return
    if "prompt_tokens" in usage or "choices" in obj:
        take_completion(obj, tally)  # OpenAI's models answer in their own shape
        return
    message = obj.get("message", obj.get("Message"))
    if isinstance(message, str) and not usage and "output" not in obj:
        tally.note_error(None, message)
        return

    tally.see_finish(obj.get("stopReason"))
    tally.see_text(obj.get("output", obj))
    found = converse_usage(usage) if usage else _vendor_usage(obj)
    if found is not None:
        tally.usage = found


class BedrockStreamReader(EventReader):
    """ConverseStream and InvokeModelWithResponseStream bodies.

    Frames are told apart by ``:event-type``: ``chunk`` frames carry a
    vendor event (Anthropic's are folded by ``AnthropicStream``; the
    invocation metrics are the fallback); the others are Converse events,
    with the usage in ``metadata``, the last event (the stream has ended
    there, as at the invocation metrics or Anthropic's ``message_stop``).
    Exception frames become problems. A broken frame stops the reading,
    since the framing cannot resynchronise: the rest of the body counts as
    unread, and so does a frame cut in its middle by the end of the body.
    """

    def __init__(self) -> None:
        super().__init__()
        self._frames = EventStreamBuffer()
        self._anthropic = AnthropicStream(self.tally)
        self._broken = False
        self._held_bytes = 0  # fed but not yet part of a whole frame

    def _split(self, data: bytes) -> None:
        if self._broken:
            self.tally.see_unread(len(data))
            return
        self._frames.add_data(data)
        self._held_bytes += len(data)
        try:
            for frame in self._frames:
                self._held_bytes -= frame.prelude.total_length
                self._guard(self._take_frame, frame.headers, frame.payload)
        except ParserError as exc:
            self._broken = True
            self.tally.complete = False
            self.tally.note(f"event stream corrupt: {type(exc).__name__}")

    def _split_end(self) -> None:
        self.tally.see_unread(self._held_bytes)

    def on_end(self) -> None:
        if not (self.tally.ended or self._broken):
            self.tally.note_cut("metadata")

    def _take_frame(self, headers: Mapping[str, Any], payload: bytes) -> None:
        obj = self._load(payload)
        if obj is None:
            return
        if headers.get(":message-type") != "event":
            kind = headers.get(":exception-type") or headers.get(":error-code")
            self.tally.note_error(kind, obj.get("message") or obj.get("Message"))
            return

        kind = headers.get(":event-type")
        if kind == "chunk":
            chunk = self._unwrap(obj)
            if chunk is not None:
                self._take_chunk(chunk)
        elif kind == "contentBlockDelta":
            self.tally.see_text(obj.get("delta"))
        elif kind == "messageStop":
            self.tally.see_finish(obj.get("stopReason"))
        elif kind == "metadata":
            self.tally.see_end()
            usage = converse_usage(mapping(obj, "usage"))
            if usage is not None:
                self.tally.usage = usage

    def _load(self, payload: bytes) -> dict[str, Any] | None:
        try:
            obj = json.loads(payload) if payload else {}
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            self.tally.note_unparseable(len(payload))
            return None

        return obj

    def _unwrap(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        encoded = str(obj.get("bytes") or "")
        try:
            payload = base64.b64decode(encoded, validate=True)
        except ValueError:
            self.tally.note_unparseable(len(encoded))
            return None

        return self._load(payload)

    def _take_chunk(self, obj: Mapping[str, Any]) -> None:
        if isinstance(obj.get("type"), str):
            self._anthropic.take(obj)
        else:
            self.tally.see_text(obj)
        metrics = mapping(obj, _METRICS)
        if metrics:
            self.tally.see_end()
            usage = metrics_usage(metrics)
            if self.tally.usage is None and usage is not None:
                self.tally.usage = usage


_USAGE_HEADERS = (  # Converse usage key, InvokeModel response header
    ("inputTokens", "x-amzn-bedrock-input-token-count"),
    ("outputTokens", "x-amzn-bedrock-output-token-count"),
    ("cacheReadInputTokens", "x-amzn-bedrock-cache-read-input-token-count"),
    ("cacheWriteInputTokens", "x-amzn-bedrock-cache-write-input-token-count"),
)


def _header_count(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit():
        raise MalformedUsage(f"{name}={short(value)}")
    return int(value)


_REGION_IN_HOST = re.compile(
    r"\.([a-z]{2}(?:-[a-z]+)+-\d+)\.(?:vpce\.)?amazonaws\.com(?::\d+)?$"
)


def region_of(url: str) -> str | None:
    """The AWS region named in a Bedrock host (``bedrock-runtime.REGION...``)."""
    host = urlsplit(url).netloc.lower()
    match = _REGION_IN_HOST.search(host)
    return match.group(1) if match else None


def credentials_from_secret(secret: str) -> Credentials:
    """AWS credentials from ``ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]``.

    Raises ``CredentialError`` (without echoing the secret) when malformed.
    """
    parts = secret.strip().split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise CredentialError(
            "a Bedrock secret must read ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]"
        )

    return Credentials(parts[0], parts[1], parts[2] if len(parts) == 3 else None)


class BedrockFamily(ProviderFamily):
    """Amazon Bedrock Runtime; requests are signed with ``sign``."""

    name = "bedrock"
    signs_body = True

    def __init__(self, *, signing_service: str = "bedrock") -> None:
        self.signing_service = signing_service

    def endpoint_for(self, method: str, path: str) -> Endpoint | None:
        found = _PATH.search(path.split("?", 1)[0])
        if method.upper() != "POST" or found is None:
            return None

        action = found.group("action")
        operation = "chat"
        if action == "invoke" and "embed" in unquote(found.group("model")).lower():
            operation = "embeddings"

        return Endpoint(self.name, operation, streaming=action in _STREAMING_ACTIONS)

    def read_request(self, endpoint: Endpoint, path: str, body: bytes) -> RequestFacts:
        obj = load_object(body, endpoint.operation)

        found = _PATH.search(path.split("?", 1)[0])
        cap = for_every_choice(first_cap(obj, _OUTPUT_CAPS), obj)
        if endpoint.operation == "embeddings":
            cap = 0

        return RequestFacts(
            model=unquote(found.group("model")) if found else None,
            streaming=bool(endpoint.streaming),
            input=estimate_input(body),
            max_output_tokens=cap,
        )

    def credential_headers(self, secret: str) -> dict[str, str]:
        """Nothing: a SigV4 signature covers the body, so the flow calls
        ``sign`` with the final body instead."""
        return {}

    def sign(
        self,
        *,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        credentials: Credentials | ReadOnlyCredentials,
        region: str,
    ) -> dict[str, str]:
        """The SigV4 headers for one request, to set on the upstream request.

        ``url`` is the upstream URL actually requested: the signature covers
        its host (any ``host`` or ``:authority`` in ``headers`` is the
        client's and is ignored), path and query, ``body``, and of
        ``headers`` only ``content-type``, so that Envoy may still change
        the others. Returns ``authorization``, ``x-amz-date`` and, for
        temporary credentials, ``x-amz-security-token``.
        """
        signed = {
            name: value
            for name, value in headers.items()
            if name.lower() in _SIGNED_HEADERS
        }
        request = AWSRequest(method=method.upper(), url=url, data=body, headers=signed)
        creds = Credentials(
            credentials.access_key, credentials.secret_key, credentials.token
        )

        SigV4Auth(creds, self.signing_service, region).add_auth(request)

        wanted = ("authorization", "x-amz-date", "x-amz-security-token")
        return {n: request.headers[n] for n in wanted if n in request.headers}

    def signed_headers(
        self,
        secret: str,
        *,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes,
        region: str | None,
    ) -> dict[str, str]:
        """SigV4 over ``url`` and ``body``; ``secret`` reads
        ``ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]``."""
        region = region or region_of(url)
        if region is None:
            raise CredentialError(f"no AWS region for {url}; set the provider's region")
        return self.sign(
            method=method,
            url=url,
            headers=headers,
            body=body,
            credentials=credentials_from_secret(secret),
            region=region,
        )

    def open_reader(
        self, endpoint: Endpoint, *, streaming: bool, content_type: str
    ) -> UsageReader:
        streamed = streaming or bool(endpoint.streaming)
        kind = body_kind(content_type, streaming=streamed, stream_kind="eventstream")
        if kind == "eventstream":
            return BedrockStreamReader()

        return JsonBodyReader(take_body)

    def header_usage(self, headers: Mapping[str, str]) -> Usage | None:
        """InvokeModel's ``x-amzn-bedrock-*-token-count`` headers, which every
        vendor's answer carries, also those whose body holds no usage."""
        try:
            return converse_usage(
                {key: _header_count(headers, name) for key, name in _USAGE_HEADERS}
            )
        except MalformedUsage:
            return None

    def error_body(self, status: int, code: str, message: str) -> bytes:
        return json.dumps({"message": message}).encode()

    def error_type(self, status: int) -> str:
        """The ``x-amzn-errortype`` value that AWS SDKs read the error from."""
        if status in _ERROR_TYPES:
            return _ERROR_TYPES[status]

        return "InternalServerException" if status >= 500 else "ValidationException"
