"""Metering one response body: decode, read usage, never raise.

Used by the ext_proc flow for every response and by ``tollgate usage`` for a
saved body, so that both meter with exactly the same code.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

from extproc.errors import MeteringError
from extproc.metering.decoding import Decoder
from extproc.metering.readers import NO_USAGE
from extproc.providers.base import Endpoint, ProviderFamily, Reading, UsageReader

log = logging.getLogger(__name__)

SSE = "text/event-stream"
EVENTSTREAM = "application/vnd.amazon.eventstream"
JSON = "application/json"
STREAM_CONTENT_TYPES = (SSE, EVENTSTREAM)

# Enough of the body to tell its format: the longest SSE field name, "retry:".
_SNIFF_BYTES = 6
_SNIFF_MAX_HELD_BYTES = 64 * 1024  # leading whitespace held at most
_SSE_STARTS = (b"data:", b"event:", b"id:", b"retry:", b":")


def is_stream(content_type: str) -> bool:
    return _media(content_type) in STREAM_CONTENT_TYPES


def body_format(content_type: str, head: bytes) -> str:
    """The content type to read a body by, from its declared type and its
    first bytes (decoded, at least ``_SNIFF_BYTES`` of them unless the body
    is shorter).

    Servers mislabel bodies: an OpenAI-compatible server streams SSE as
    ``text/plain`` or ``application/json``, answers an error as JSON under
    ``text/event-stream``, or sends no type at all. What the body starts
    with wins where it is unambiguous: JSON never starts with an SSE field
    or a NUL byte (the first byte of an AWS event-stream frame's length),
    and SSE never starts with a brace or a bracket.
    """
    start = head.lstrip(b" \t\r\n\xef\xbb\xbf")
    if start.startswith((b"{", b"[")) and _media(content_type) in (SSE, ""):
        return JSON
    if is_stream(content_type):
        return content_type
    if start.startswith(_SSE_STARTS):
        return SSE
    if head.startswith(b"\x00"):
        return EVENTSTREAM

    return content_type


class ResponseMeter:
    """Feeds one response body, as it passes, to its provider's usage reader.

    The reader is chosen once the first bytes of the decoded body are seen
    (``body_format``); ``headers`` (the response's) supply usage where the
    family reports it there and the body carries none. A body that cannot be
    decoded or read leaves a ``problem`` in the final ``Reading`` instead of
    raising: metering never fails a call that policy allowed. The bytes that
    never reached the reader then count as unread (``Reading.unread_chars``).
    """

    def __init__(
        self,
        family: ProviderFamily,
        endpoint: Endpoint,
        *,
        content_type: str,
        content_encoding: str = "identity",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._unread_bytes = 0  # fed, but never reached a reader
        self._headers = headers or {}
        self._family = family
        self._endpoint = endpoint
        self._content_type = content_type
        self._head = b""  # decoded bytes held until the format is known
        self._problem: str | None = None
        self._reader: UsageReader | None = None
        self._decoder: Decoder | None = None
        try:
            self._decoder = Decoder(content_encoding or "identity")
        except MeteringError as exc:
            self._problem = f"cannot meter this response: {exc}"

    def feed(self, chunk: bytes) -> None:
        if self._decoder is None:
            self._unread_bytes += len(chunk)
            return
        try:
            self._take(self._decoder.feed(chunk))
        except Exception as exc:  # metering never fails a call policy allowed
            # Some of the chunk may have been read: counting it all as
            # unread errs towards charging more, never nothing.
            self._unread_bytes += len(chunk)
            self._fail(exc)

    @property
    def ended(self) -> bool:
        """True once the body's last event has been read (``Reading.ended``):
        its reading will not change, whatever else arrives."""
        return self._reader is not None and self._reader.ended

    def finish(self) -> Reading:
        """What the body said; call once, at the end of the body or when cut."""
        try:
            if self._decoder is not None:
                self._take(self._decoder.flush(), final=True)
        except Exception as exc:  # a truncated compressed body still has a reading
            # After the last event only the coding's end mark was missing
            # (a client that hung up at [DONE]); nothing of the reading was.
            if not self.ended:
                self._problem = f"metering failed: {type(exc).__name__}: {exc}"
        self._decoder = None
        reader, self._reader = self._reader, None
        unread = self._unread_bytes + len(self._head)
        if reader is None:
            return Reading(
                usage=None,
                problem=self._problem or "no reader",
                complete=False,
                unread_chars=unread,
            )

        reading = self._with_header_usage(reader.finish())
        if unread:
            reading = replace(reading, unread_chars=reading.unread_chars + unread)
        if self._problem:
            return _with_problem(reading, self._problem)
        return reading

    def _with_header_usage(self, reading: Reading) -> Reading:
        """The body's usage; where it has none, what the headers report."""
        if reading.usage is not None:
            return reading
        usage = self._family.header_usage(self._headers)
        if usage is None:
            return reading
        problem = None if reading.problem == NO_USAGE else reading.problem
        return replace(reading, usage=usage, problem=problem)

    def _take(self, data: bytes, *, final: bool = False) -> None:
        if self._reader is None:
            self._head += data
            undecided = len(self._head.lstrip()) < _SNIFF_BYTES
            if undecided and not final and len(self._head) < _SNIFF_MAX_HELD_BYTES:
                return
            data, self._head = self._head, b""
            self._reader = self._open(body_format(self._content_type, data))
        if data:
            self._reader.feed(data)

    def _open(self, content_type: str) -> UsageReader:
        try:
            return self._family.open_reader(
                self._endpoint,
                streaming=is_stream(content_type),
                content_type=content_type,
            )
        except (MeteringError, ValueError) as exc:
            raise MeteringError(f"cannot meter this response: {exc}") from exc

    def _fail(self, exc: Exception) -> None:
        self._problem = f"metering failed: {type(exc).__name__}: {exc}"
        self._decoder = None
        log.warning("metering failed", exc_info=True)


def _media(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def _with_problem(reading: Reading, problem: str) -> Reading:
    joined = f"{reading.problem}; {problem}" if reading.problem else problem
    return replace(reading, problem=joined, complete=False)
