"""Metering one response body: decode, read usage, never raise.

Used by the ext_proc flow for every response and by ``tollgate usage`` for a
saved body, so that both meter with exactly the same code.
"""

from __future__ import annotations

import logging

from extproc.errors import MeteringError
from extproc.metering.decoding import Decoder
from extproc.providers.base import Endpoint, ProviderFamily, Reading, UsageReader

log = logging.getLogger(__name__)

STREAM_CONTENT_TYPES = ("text/event-stream", "application/vnd.amazon.eventstream")


def is_stream(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() in STREAM_CONTENT_TYPES


class ResponseMeter:
    """Feeds one response body, as it passes, to its provider's usage reader.

    A body that cannot be decoded or read leaves a ``problem`` in the final
    ``Reading`` instead of raising: metering never fails a call that policy
    allowed.
    """

    def __init__(
        self,
        family: ProviderFamily,
        endpoint: Endpoint,
        *,
        content_type: str,
        content_encoding: str = "identity",
    ) -> None:
        self.bytes_seen = 0
        self._problem: str | None = None
        self._reader: UsageReader | None = None
        self._decoder: Decoder | None = None
        try:
            self._decoder = Decoder(content_encoding or "identity")
            self._reader = family.open_reader(
                endpoint, streaming=is_stream(content_type), content_type=content_type
            )
        except (MeteringError, ValueError) as exc:
            self._problem = f"cannot meter this response: {exc}"

    def feed(self, chunk: bytes) -> None:
        self.bytes_seen += len(chunk)
        if self._reader is None or self._decoder is None:
            return
        try:
            self._reader.feed(self._decoder.feed(chunk))
        except Exception as exc:  # metering never fails a call policy allowed
            self._fail(exc)

    def finish(self) -> Reading:
        """What the body said; call once, at the end of the body or when cut."""
        reader, self._reader = self._reader, None
        if reader is None:
            return Reading(
                usage=None, problem=self._problem or "no reader", complete=False
            )
        try:
            if self._decoder is not None:
                reader.feed(self._decoder.flush())
        except Exception as exc:  # a truncated compressed body still has a reading
            self._problem = f"metering failed: {type(exc).__name__}: {exc}"
        reading = reader.finish()
        if self._problem:
            return _with_problem(reading, self._problem)
        return reading

    def _fail(self, exc: Exception) -> None:
        self._problem = f"metering failed: {type(exc).__name__}: {exc}"
        self._reader = None
        log.warning("metering failed", exc_info=True)


def _with_problem(reading: Reading, problem: str) -> Reading:
    joined = f"{reading.problem}; {problem}" if reading.problem else problem
    return Reading(
        usage=reading.usage,
        model=reading.model,
        problem=joined,
        finish_reasons=reading.finish_reasons,
        complete=False,
        text_chars=reading.text_chars,
    )
