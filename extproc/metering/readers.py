"""Building blocks that the provider families assemble their readers from.

- ``Tally`` collects what a reader saw (usage, model, finish reasons,
  problems, generated text length, body left unread, whether the body
  reached its last event) and freezes it into a ``Reading``.
- ``count`` reads one token counter from a provider's usage object.
- ``JsonBodyReader`` buffers a plain JSON body (bounded) and interprets it.
- ``EventReader`` is the base of readers that see a body as a sequence of
  events: it guarantees that ``feed`` and ``finish`` never raise.
- ``SseReader`` and ``JsonSequenceReader`` cut a body into events: SSE, or
  a JSON array streamed element by element (Gemini without ``alt=sse``).
- ``FreeReader`` answers for operations that cost nothing.

Problem strings, joined with ``"; "`` in ``Reading.problem``:

    no usage in response              the body was read but carried no usage
    error: [TYPE: ]MESSAGE            an error object or error event (first)
    stream ended before WHAT          the terminal event never came
    unparseable JSON body / unparseable event data
    body over N bytes; ...            the JSON body passed the buffer cap
    N oversized events dropped
    malformed usage: DETAIL           a counter that is not a count
    event stream corrupt: DETAIL      binary framing broken (Bedrock)
    reader fault: NAME                a bug in a reader, logged with traceback
"""

from __future__ import annotations

import abc
import json
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

from extproc.metering.sse import SseEvent, SseParser
from extproc.metering.usage import Usage
from extproc.providers.base import Reading, UsageReader

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_EVENT_BYTES = 8 * 1024 * 1024
# No call reads or writes a billion tokens (context windows are a few
# million); a larger counter is a broken body, and pricing it could book an
# absurd debt against a budget.
MAX_TOKEN_COUNT = 1_000_000_000

NO_USAGE = "no usage in response"
_MAX_PROBLEMS = 6
_MAX_MESSAGE_CHARS = 200
_TAIL_BYTES = 64 * 1024


class MalformedUsage(ValueError):
    """A usage counter is present but is not a non-negative integer."""


def count(obj: Any, key: str) -> int | None:
    """The counter ``obj[key]``: None when absent or null.

    Raises ``MalformedUsage`` for a value that is not a non-negative integer
    (an integral float such as ``12.0`` is accepted as 12) or that is past
    ``MAX_TOKEN_COUNT``.
    """
    if not isinstance(obj, Mapping):
        return None
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MalformedUsage(f"{key}={short(repr(value))}")
    if value > MAX_TOKEN_COUNT:
        raise MalformedUsage(f"{key}={value} is past {MAX_TOKEN_COUNT} tokens")

    return value


def count_where(entries: Any, key: str, **match: Any) -> int:
    """The sum of the counter ``key`` over the entries of the list
    ``entries`` whose fields equal ``match`` (a breakdown by modality or by
    cache lifetime); 0 when ``entries`` is not a list."""
    if not isinstance(entries, list):
        return 0
    return sum(
        count(entry, key) or 0
        for entry in entries
        if isinstance(entry, Mapping)
        and all(entry.get(field) == value for field, value in match.items())
    )


def mapping(obj: Any, key: str) -> Mapping[str, Any]:
    """``obj[key]`` when it is an object, else an empty mapping."""
    value = obj.get(key) if isinstance(obj, Mapping) else None

    return value if isinstance(value, Mapping) else {}


def short(text: Any) -> str:
    """A provider message cut to a length fit for a log line."""
    text = " ".join(str(text).split())
    if len(text) > _MAX_MESSAGE_CHARS:
        text = text[: _MAX_MESSAGE_CHARS - 3] + "..."

    return text


class Tally:
    """What one reader has seen so far.

    Later usage replaces earlier usage (providers send cumulative counts);
    problems are kept without repeats, at most six, provider errors first;
    ``text_chars`` counts generated text for a length estimate, and
    ``unread_chars`` the body the reader could not interpret (an event that
    does not parse, one cut in its middle, one dropped for its size), whose
    text is unknown; ``complete`` turns False when the body ended before its
    last event or an event was dropped unread; ``ended`` turns True when
    that last event was seen.
    A usage followed by one that could not be read is stale: the reading
    is then not whole, until a readable usage replaces it.
    """

    def __init__(self) -> None:
        self._usage: Usage | None = None
        self._usage_unread = False  # the latest usage reported was malformed
        self.model: str | None = None
        self.finish_reasons: list[str] = []
        self.problems: list[str] = []
        self.text_chars = 0
        self.unread_chars = 0
        self.complete = True
        self.ended = False
        self.service_tier: str | None = None

    @property
    def usage(self) -> Usage | None:
        return self._usage

    @usage.setter
    def usage(self, usage: Usage | None) -> None:
        self._usage = usage
        self._usage_unread = False

    def see_model(self, model: Any) -> None:
        if isinstance(model, str) and model:
            self.model = model

    def see_service_tier(self, tier: Any) -> None:
        if isinstance(tier, str) and tier:
            self.service_tier = tier.lower()

    def see_finish(self, reason: Any) -> None:
        if isinstance(reason, str) and reason:
            self.finish_reasons.append(reason)

    def see_text(self, fragment: Any) -> None:
        """Count the generated text in ``fragment`` (a delta, a message...)."""
        self.text_chars += text_chars(fragment)

    def see_unread(self, chars: int) -> None:
        """``chars`` of the body could not be interpreted."""
        self.unread_chars += chars

    def note_unparseable(self, chars: int) -> None:
        """An event of ``chars`` characters did not parse."""
        self.see_unread(chars)
        self.note("unparseable event data")

    def note(self, problem: str) -> None:
        if problem not in self.problems and len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(problem)

    def note_error(self, kind: Any, message: Any) -> None:
        prefix = f"{short(kind)}: " if kind else ""
        self.note(f"error: {prefix}{short(message)}")

    def note_malformed(self, exc: MalformedUsage) -> None:
        """A usage counter that is not a count: that usage went unread."""
        self._usage_unread = True
        self.note(f"malformed usage: {exc}")

    def note_dropped(self, events: int, chars: int) -> None:
        """``events`` events too large to hold, ``chars`` characters or more,
        were dropped unread. What they said (a last chunk with an image and
        the usage, say) is unknown, so the reading is not whole."""
        self.complete = False
        self.see_unread(chars)
        self.note(f"{events} oversized events dropped")

    def see_end(self) -> None:
        """The body sent the event its format ends with."""
        self.ended = True

    def note_cut(self, missing: str) -> None:
        """The body ended before ``missing``, its expected last event."""
        self.complete = False
        self.note(f"stream ended before {missing}")

    def reading(self) -> Reading:
        problems = sorted(self.problems, key=lambda p: not p.startswith("error: "))
        if self.usage is None and not problems:
            problems.append(NO_USAGE)

        stale = self._usage_unread and self._usage is not None

        return Reading(
            usage=self._usage,
            model=self.model,
            problem="; ".join(problems) or None,
            finish_reasons=tuple(self.finish_reasons),
            complete=self.complete and not stale,
            text_chars=self.text_chars,
            unread_chars=self.unread_chars,
            service_tier=self.service_tier,
            ended=self.ended,
        )


# Keys under which providers put generated text: message and delta content,
# reasoning, tool-call arguments, Anthropic's partial JSON, Llama's
# generation, Titan's output text. Redacted reasoning is left out: it is
# encrypted and signed, and its length is several times the thinking's.
_TEXT_KEYS = frozenset(
    {
        "content",
        "text",
        "reasoning",
        "reasoning_content",
        "thinking",
        "refusal",
        "arguments",
        "partial_json",
        "generation",
        "outputText",
        "delta",
        "input",
    }
)
# Keys under which a tool call's arguments come as an object, not as text
# (Gemini's functionCall.args, a whole tool_use or toolUse block's input).
_ARGUMENT_KEYS = frozenset({"args", "input", "arguments"})


def text_chars(fragment: Any) -> int:
    """Characters of generated text in ``fragment``: a string itself, or
    every string held under a text key at any depth of objects and lists,
    and tool-call arguments sent as an object, counted as their compact
    JSON. Keys, other values and the JSON around them count nothing."""
    if isinstance(fragment, str):
        return len(fragment)
    if isinstance(fragment, list):
        return sum(text_chars(item) for item in fragment)
    if not isinstance(fragment, Mapping):
        return 0

    total = 0
    for key, value in fragment.items():
        if isinstance(value, str):
            total += len(value) if key in _TEXT_KEYS else 0
        elif key in _ARGUMENT_KEYS and isinstance(value, Mapping):
            total += _json_chars(value)
        else:
            total += text_chars(value)

    return total


def _json_chars(value: Mapping[str, Any]) -> int:
    """An object's length as compact JSON; an empty one (a placeholder that
    the arguments are streamed into later) counts nothing."""
    if not value:
        return 0
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


Interpret = Callable[[Any, Tally], None]


class JsonBodyReader(UsageReader):
    """Reads a plain JSON body: buffered up to ``max_bytes``, then interpreted.

    ``interpret(obj, tally)`` gets the parsed body. A body past the cap is
    not kept whole: only its tail is, and if one of ``tail_keys`` (a usage
    object, which providers put last) parses there, ``interpret`` gets
    ``{key: value}`` and the reading says the rest went unread.
    """

    def __init__(
        self,
        interpret: Interpret,
        *,
        tail_keys: tuple[str, ...] = ("usage",),
        max_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self._interpret = interpret
        self._tail_keys = tail_keys
        self._max_bytes = max_bytes
        self._body = bytearray()
        self._seen_bytes = 0

    def feed(self, data: bytes) -> None:
        self._seen_bytes += len(data)
        self._body += data
        if self._seen_bytes > self._max_bytes:
            del self._body[:-_TAIL_BYTES]

    def finish(self) -> Reading:
        tally = Tally()
        try:
            obj = self._parse(tally)
            if obj is not None:
                self._interpret(obj, tally)
        except MalformedUsage as exc:
            tally.note_malformed(exc)
        except Exception as exc:  # metering never fails the request
            logger.exception("json_reader_fault")
            tally.note(f"reader fault: {type(exc).__name__}")

        return tally.reading()

    def _parse(self, tally: Tally) -> Any:
        """The body's object; a body not read whole counts as unread."""
        if self._seen_bytes > self._max_bytes:
            tally.see_unread(self._seen_bytes)
            tally.note(f"body over {self._max_bytes} bytes; only its tail was read")
            return _tail_object(bytes(self._body), self._tail_keys)
        try:
            obj = json.loads(self._body)
        except (ValueError, RecursionError):
            obj = None
        if not isinstance(obj, Mapping):
            tally.see_unread(self._seen_bytes)
            tally.note("unparseable JSON body")
            return None

        return obj


def _tail_object(tail: bytes, keys: tuple[str, ...]) -> dict[str, Any] | None:
    text = tail.decode("utf-8", errors="replace")
    for key in keys:
        found = list(re.finditer(rf'"{re.escape(key)}"\s*:\s*', text))
        if not found:
            continue
        try:
            value, _ = json.JSONDecoder().raw_decode(text, found[-1].end())
        except ValueError:
            continue
        if isinstance(value, dict):
            return {key: value}

    return None


class EventReader(UsageReader):
    """A reader that turns body bytes into events and hands each to a hook.

    Subclasses implement ``_split`` (bytes to raw events), ``on_event`` and
    optionally ``on_end`` (say what a cut stream lacks). Every exception from
    a hook is caught and noted: ``feed`` and ``finish`` never raise.
    """

    def __init__(self) -> None:
        self.tally = Tally()
        self._finished = False

    def feed(self, data: bytes) -> None:
        if self._finished or not data:
            return
        self._guard(self._split, data)

    def finish(self) -> Reading:
        if not self._finished:
            self._finished = True
            self._guard(self._split_end)
            self._guard(self.on_end)

        return self.tally.reading()

    @property
    def ended(self) -> bool:
        return self.tally.ended

    @abc.abstractmethod
    def _split(self, data: bytes) -> None: ...

    def _split_end(self) -> None:
        """End of body: hand over what the splitter still holds."""

    def on_end(self) -> None:
        """End of body: note what is missing. Default: nothing."""

    def _guard(self, step: Callable[..., None], *args: Any) -> None:
        try:
            step(*args)
        except MalformedUsage as exc:
            self.tally.note_malformed(exc)
        except Exception as exc:  # metering never fails the request
            logger.exception("event_reader_fault")
            self.tally.note(f"reader fault: {type(exc).__name__}")


class SseReader(EventReader):
    """An ``EventReader`` over Server-Sent Events.

    ``on_event`` gets each ``SseEvent``; ``load`` parses its data as a JSON
    object or notes that it could not, counting the data as unread. An event
    cut in its middle by the end of the body does not parse either.
    """

    def __init__(self, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        super().__init__()
        self._parser = SseParser(max_event_chars=max_event_bytes)

    @abc.abstractmethod
    def on_event(self, event: SseEvent) -> None: ...

    def load(self, event: SseEvent) -> dict[str, Any] | None:
        try:
            obj = json.loads(event.data)
        except (ValueError, RecursionError):
            obj = None
        if not isinstance(obj, dict):
            self.tally.note_unparseable(len(event.data))
            return None

        return obj

    def _split(self, data: bytes) -> None:
        self._deliver(self._parser.feed(data))

    def _split_end(self) -> None:
        self._deliver(self._parser.close())
        dropped = self._parser.dropped_events
        if dropped:
            self.tally.note_dropped(dropped, dropped * self._parser.max_event_chars)

    def _deliver(self, events: list[SseEvent]) -> None:
        for event in events:
            for part in unjoined(event):
                self._guard(self.on_event, part)


def unjoined(event: SseEvent) -> list[SseEvent]:
    """``event`` as the events its server meant.

    A server that ends each event with one line break instead of a blank
    line sends what the SSE rules read as one event whose data lines are
    joined. When the joined data is not one JSON value but every line is
    (or is ``[DONE]``), each line is an event of its own; otherwise the
    event is kept whole.
    """
    lines = [line for line in event.data.split("\n") if line.strip()]
    if len(lines) < 2 or _is_json(event.data):
        return [event]
    if not all(line.strip() == "[DONE]" or _is_json(line) for line in lines):
        return [event]

    return [SseEvent(event=event.event, data=line) for line in lines]


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


class JsonSequenceReader(EventReader):
    """An ``EventReader`` over a JSON array streamed element by element.

    Each object element of a top-level array goes to ``on_object``; a body
    that is a single top-level object (an error, for instance) goes there
    whole.
    """

    def __init__(self, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        super().__init__()
        self._splitter = JsonSplitter(max_element_bytes=max_event_bytes)

    @abc.abstractmethod
    def on_object(self, obj: dict[str, Any]) -> None: ...

    def _split(self, data: bytes) -> None:
        for element in self._splitter.feed(data):
            self._guard(self._take, element)

    def _split_end(self) -> None:
        splitter = self._splitter
        if splitter.dropped:
            chars = splitter.dropped * splitter.max_element_bytes
            self.tally.note_dropped(splitter.dropped, chars)
        if splitter.pending:
            self.tally.see_unread(splitter.pending_bytes)
            self.tally.note_cut("the end of its JSON array")

    def _take(self, element: bytes) -> None:
        try:
            obj = json.loads(element)
        except (ValueError, RecursionError):
            obj = None
        if not isinstance(obj, dict):
            self.tally.note_unparseable(len(element))
            return
        self.on_object(obj)


_OUTSIDE_STRING = re.compile(rb'[\[\]{}"]')
_INSIDE_STRING = re.compile(rb'["\\]')


class JsonSplitter:
    """Cuts a byte stream holding a JSON array of objects (or one object)
    into the bytes of each element, as soon as each element is complete.

    Only structure is tracked (nesting, strings, escapes); elements are not
    validated here. An element over ``max_element_bytes`` is dropped and
    counted in ``dropped``.
    """

    def __init__(self, *, max_element_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.max_element_bytes = max_element_bytes
        self.dropped = 0
        self._buf = bytearray()
        self._pos = 0  # next byte of _buf to scan
        self._start: int | None = None  # where the current element began
        self._dropping = False
        self._depth = 0
        self._top = 0  # the byte that opened the top-level value, 0 if none
        self._in_string = False
        self._escaped = False

    @property
    def pending(self) -> bool:
        """True when the stream stopped inside a value."""
        return self._depth > 0

    @property
    def pending_bytes(self) -> int:
        """The bytes held of an element not yet complete (0 while one too
        large is being dropped: it is counted in ``dropped``)."""
        if self._start is None or self._dropping:
            return 0
        return len(self._buf) - self._start

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        elements: list[bytes] = []
        pos = self._scan(elements)
        self._trim(pos)

        return elements

    def _scan(self, elements: list[bytes]) -> int:
        buf, pos, end = self._buf, self._pos, len(self._buf)
        while pos < end:
            if self._escaped:
                self._escaped, pos = False, pos + 1
                continue
            pattern = _INSIDE_STRING if self._in_string else _OUTSIDE_STRING
            match = pattern.search(buf, pos)
            if match is None:
                return end
            pos = match.start()
            self._step(buf[pos], pos, elements)
            pos += 1

        return pos

    def _step(self, byte: int, pos: int, elements: list[bytes]) -> None:
        if self._in_string:
            self._escaped = byte == 0x5C  # backslash
            self._in_string = self._escaped
            return
        if byte == 0x22:  # quote
            self._in_string = True
        elif byte in b"[{":
            if self._depth == 0:
                self._top = byte
            if self._depth == self._element_depth():
                self._start, self._dropping = pos, False
            self._depth += 1
        elif self._depth > 0:
            self._depth -= 1
            if self._depth == self._element_depth() and self._start is not None:
                if pos + 1 - self._start > self.max_element_bytes:
                    self._drop()
                if not self._dropping:
                    elements.append(bytes(self._buf[self._start : pos + 1]))
                self._start = None

    def _element_depth(self) -> int:
        return 1 if self._top == 0x5B else 0  # inside "[" or at top level

    def _drop(self) -> None:
        if not self._dropping:
            self.dropped += 1
        self._dropping = True

    def _trim(self, pos: int) -> None:
        keep_from = pos if self._start is None else self._start
        if self._start is not None and pos - self._start > self.max_element_bytes:
            self._drop()
            keep_from = pos
        del self._buf[:keep_from]
        self._pos = pos - keep_from
        if self._start is not None:
            self._start = max(self._start - keep_from, 0)


class FreeReader(UsageReader):
    """For operations that cost nothing (token counting): zero usage, known."""

    def feed(self, data: bytes) -> None:
        return None

    def finish(self) -> Reading:
        return Reading(usage=Usage())


def body_kind(content_type: str, *, streaming: bool, stream_kind: str = "sse") -> str:
    """``"sse"``, ``"eventstream"`` or ``"json"``: how to read a response body.

    The content type decides (an error answer to a streaming request is plain
    JSON); without one, a streaming request is taken to answer in
    ``stream_kind``.
    """
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "text/event-stream":
        return "sse"
    if media == "application/vnd.amazon.eventstream":
        return "eventstream"
    if media or not streaming:
        return "json"

    return stream_kind
