"""An incremental Server-Sent-Events parser.

The parser follows the event-stream interpretation rules of the WHATWG HTML
standard, with two deliberate departures that suit metering a proxied body:

- ``close`` dispatches a last event that lacks its terminating blank line
  (several real streams end that way; the standard would drop it);
- one event larger than ``max_event_chars`` is dropped and counted in
  ``dropped_events`` instead of being buffered without bound.

Bytes may be fed with any boundaries: in the middle of a line, of a CRLF
pair or of a UTF-8 sequence. Invalid UTF-8 becomes U+FFFD; nothing raises.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

DEFAULT_MAX_EVENT_CHARS = 8 * 1024 * 1024

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_BOM = "\ufeff"


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched event: its type (``message`` when unnamed) and data."""

    event: str
    data: str


class SseParser:
    """Turns event-stream bytes into ``SseEvent`` values, chunk by chunk.

    ``feed`` returns the events completed by the new bytes; ``close`` returns
    the event still pending at end of stream, if any. ``dropped_events``
    counts events discarded for exceeding ``max_event_chars``, measured in
    characters of their lines (comments included, line ends counted as one).
    """

    def __init__(self, max_event_chars: int = DEFAULT_MAX_EVENT_CHARS) -> None:
        self.max_event_chars = max_event_chars
        self.dropped_events = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._at_start = True
        self._skip_lf = False  # the last chunk ended in CR: a leading LF pairs
        self._partial: list[str] = []  # the unfinished line, in pieces
        self._partial_chars = 0
        self._partial_dropped = False  # the unfinished line was too long
        self._event_type = ""
        self._data: list[str] = []
        self._event_chars = 0
        self._oversized = False  # discarding the rest of an oversized event

    def feed(self, data: bytes) -> list[SseEvent]:
        """Parse ``data``; return the events it completed."""
        return self._take_text(self._decoder.decode(data))

    def close(self) -> list[SseEvent]:
        """End of stream: finish a pending line and a pending event."""
        events = self._take_text(self._decoder.decode(b"", final=True))
        if self._partial or self._partial_dropped:
            events.extend(self._take_line(self._complete_line("")))
        events.extend(self._take_line(""))
        self._skip_lf = False

        return events

    def _take_text(self, text: str) -> list[SseEvent]:
        if self._at_start and text:
            self._at_start = False
            text = text.removeprefix(_BOM)
        if self._skip_lf and text:
            self._skip_lf = False
            text = text.removeprefix("\n")
        if not text:
            return []

        pieces = _LINE_BREAK.split(text)
        self._skip_lf = text.endswith("\r")
        events: list[SseEvent] = []
        for piece in pieces[:-1]:
            events.extend(self._take_line(self._complete_line(piece)))
        self._hold_partial(pieces[-1])

        return events

    def _hold_partial(self, piece: str) -> None:
        if not piece or self._partial_dropped:
            return
        self._partial.append(piece)
        self._partial_chars += len(piece)
        if self._event_chars + self._partial_chars > self.max_event_chars:
            self._partial, self._partial_chars = [], 0
            self._partial_dropped = True
            self._start_discarding()

    def _complete_line(self, piece: str) -> str | None:
        """The line that ``piece`` ends, or None when it was dropped."""
        if self._partial_dropped:
            self._partial_dropped = False
            return None
        self._partial.append(piece)
        line = "".join(self._partial)
        self._partial, self._partial_chars = [], 0

        return line

    def _take_line(self, line: str | None) -> list[SseEvent]:
        if line == "":
            return self._dispatch()
        if line is None or self._oversized:
            return []
        self._event_chars += len(line) + 1
        if self._event_chars > self.max_event_chars:
            self._start_discarding()
            return []
        if line.startswith(":"):
            return []

        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event_type = value

        return []

    def _start_discarding(self) -> None:
        if not self._oversized:
            self.dropped_events += 1
        self._oversized = True
        self._data = []

    def _dispatch(self) -> list[SseEvent]:
        data, event_type = self._data, self._event_type
        self._data, self._event_type = [], ""
        self._event_chars, self._oversized = 0, False
        if not data:
            return []

        return [SseEvent(event=event_type or "message", data="\n".join(data))]
