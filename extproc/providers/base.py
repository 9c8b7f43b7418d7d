"""What the gateway needs to know about one provider family.

A provider family (``openai``, ``anthropic``, ...) is one small module that
subclasses ``ProviderFamily``. The ext_proc flow only talks to this interface:

1. ``endpoint_for`` classifies the request path (after the route prefix).
2. ``read_request`` reads the buffered request body once: model, streaming,
   output cap, an input-size estimate and an optional body rewrite.
3. ``credential_headers`` gives the headers that carry the upstream credential.
4. ``open_reader`` returns a fresh ``UsageReader`` for the response body.
5. ``error_body`` renders a gateway refusal in the provider's own error shape,
   so that SDKs surface it the way they surface the provider's errors.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass

from extproc.metering.usage import Usage
from extproc.providers._request import InputEstimate, replace_model


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One API operation of a provider family.

    ``operation`` follows the GenAI semantic conventions where one exists
    (``chat``, ``text_completion``, ``embeddings``, ``generate_content``);
    ``billable`` is False for free operations such as token counting.
    """

    family: str
    operation: str
    billable: bool = True
    streaming: bool | None = None  # fixed by the path (Gemini, Bedrock), else None


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the request body says about the coming call.

    ``input`` is what the body holds; ``max_output_tokens`` is the client's
    cap if it set one; ``service_tier`` the tier it asks to be served in,
    where its provider prices tiers apart; ``body`` is the body to send
    upstream when the gateway changes it (else None).
    """

    model: str | None
    streaming: bool
    input: InputEstimate
    max_output_tokens: int | None = None
    service_tier: str | None = None
    body: bytes | None = None

    @property
    def input_estimate_tokens(self) -> int:
        """The input to reserve for: one token per three bytes of text,
        more than tokenisers make of it, so that it leans high."""
        return self.input.tokens(3)


@dataclass(frozen=True, slots=True)
class Reading:
    """What a response body said about usage.

    ``usage`` is None when the body carried no usage at all (unknown, never
    zero). ``model`` is the model the provider reports, if any. ``problem``
    says what went wrong while reading (truncated stream, garbage, an error
    event), None when the body was read cleanly.
    """

    usage: Usage | None
    model: str | None = None
    problem: str | None = None
    finish_reasons: tuple[str, ...] = ()
    complete: bool = True  # False when the body ended before its last event
    text_chars: int = 0  # generated text seen, for a length estimate
    # Body the reader could not interpret (an event that did not parse, one
    # cut in its middle, bytes that could not be decoded): its text is
    # unknown, so a length estimate counts it whole.
    unread_chars: int = 0
    service_tier: str | None = None  # the tier the provider says it served
    # True once the body sent the event its format ends with ([DONE],
    # message_stop...): a connection closed after it lost nothing.
    ended: bool = False


class UsageReader(abc.ABC):
    """Reads usage from one response body, fed in arbitrary chunks.

    ``feed`` takes decoded (decompressed) body bytes with any boundaries and
    never raises; ``finish`` is called once at end of body (or when the stream
    was cut) and returns what was seen.
    """

    @abc.abstractmethod
    def feed(self, data: bytes) -> None: ...

    @abc.abstractmethod
    def finish(self) -> Reading: ...

    @property
    def ended(self) -> bool:
        """True once the body's last event has been fed (``Reading.ended``);
        a format without such an event never says so."""
        return False


class ProviderFamily(abc.ABC):
    """One provider wire format: classification, credentials, usage."""

    name: str
    signs_body: bool = False  # True where the credential depends on the body
    model_in_body: bool = False  # True where the body's "model" names the model

    @abc.abstractmethod
    def endpoint_for(self, method: str, path: str) -> Endpoint | None:
        """Classify ``path`` (query included, route prefix removed)."""

    @abc.abstractmethod
    def read_request(self, endpoint: Endpoint, path: str, body: bytes) -> RequestFacts:
        """Read the request body. Raises ``BadRequest`` for a body the
        endpoint cannot take (for example JSON that does not parse)."""

    @abc.abstractmethod
    def credential_headers(self, secret: str) -> dict[str, str]:
        """Headers that carry ``secret`` upstream."""

    def with_model(self, body: bytes, model: str) -> bytes | None:
        """``body`` asking for ``model`` instead, or None where the model is
        not named in the body (it is in the path) and cannot be changed."""
        if not self.model_in_body:
            return None
        return replace_model(body, model)

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
        """Headers that carry a credential computed over the final request
        (only families with ``signs_body``): ``url`` is the upstream URL as
        sent, ``body`` the body as sent."""
        return {}

    @abc.abstractmethod
    def open_reader(
        self, endpoint: Endpoint, *, streaming: bool, content_type: str
    ) -> UsageReader:
        """A fresh reader for one response body."""

    def header_usage(self, headers: Mapping[str, str]) -> Usage | None:
        """Usage the response headers report, for a body that carries none
        (Bedrock's InvokeModel for some vendors). Default: none."""
        return None

    @abc.abstractmethod
    def error_body(self, status: int, code: str, message: str) -> bytes:
        """A refusal rendered in this provider's JSON error shape."""
