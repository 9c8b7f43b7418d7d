"""The incremental SSE parser: exact events for any chunking, bounded size."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from extproc.metering.sse import SseEvent, SseParser


def parse(*chunks: bytes, limit: int | None = None) -> list[SseEvent]:
    parser = SseParser() if limit is None else SseParser(max_event_chars=limit)
    events = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    events.extend(parser.close())

    return events


def test_a_data_event_without_a_name_is_a_message() -> None:
    assert [SseEvent("message", "hi")] == parse(b"data: hi\n\n")


def test_the_event_field_names_the_event() -> None:
    assert [SseEvent("ping", "{}")] == parse(b"event: ping\ndata: {}\n\n")


def test_multi_line_data_joins_with_newlines() -> None:
    assert [SseEvent("message", "a\n\nb")] == parse(b"data: a\ndata:\ndata: b\n\n")


def test_one_leading_space_is_removed_from_a_value_and_no_more() -> None:
    assert [SseEvent("message", " x")] == parse(b"data:  x\n\n")


def test_a_value_may_follow_the_colon_without_a_space() -> None:
    assert [SseEvent("message", "x")] == parse(b"data:x\n\n")


def test_comment_lines_are_ignored() -> None:
    assert [SseEvent("message", "x")] == parse(b": keep-alive\ndata: x\n: more\n\n")


def test_unknown_fields_and_fields_without_colon_are_ignored() -> None:
    assert [SseEvent("message", "x")] == parse(b"id: 7\nretry: 10\nbogus\ndata: x\n\n")


def test_an_event_without_data_is_not_dispatched() -> None:
    assert [] == parse(b"event: ping\n\n")


def test_crlf_split_between_chunks_ends_one_line_only() -> None:
    assert [SseEvent("message", "x")] == parse(b"data: x\r", b"\n\r", b"\n")


def test_lone_cr_ends_a_line() -> None:
    assert [SseEvent("message", "x")] == parse(b"data: x\r\r")


def test_a_utf8_character_split_between_chunks_is_whole() -> None:
    body = "data: héllo 👋\n\n".encode()

    assert [SseEvent("message", "héllo 👋")] == parse(body[:9], body[9:13], body[13:])


def test_a_bom_at_the_start_is_dropped() -> None:
    assert [SseEvent("message", "x")] == parse(b"\xef\xbb", b"\xbfdata: x\n\n")


def test_a_bom_later_in_the_stream_is_data() -> None:
    events = parse(b"data: x\n\n", "data: \ufeffy\n\n".encode())

    assert "\ufeffy" == events[1].data


def test_close_dispatches_a_last_event_without_its_blank_line() -> None:
    assert [SseEvent("end", "x")] == parse(b"event: end\ndata: x\n")


def test_close_reads_a_last_line_without_its_line_end() -> None:
    assert [SseEvent("message", "x")] == parse(b"data: x")


def test_invalid_utf8_becomes_replacement_characters() -> None:
    assert [SseEvent("message", "a\ufffdb")] == parse(b"data: a\xffb\n\n")


def test_an_event_over_the_limit_is_dropped() -> None:
    assert [] == parse(b"data: " + b"x" * 50 + b"\n\n", limit=20)


def test_an_event_over_the_limit_is_counted() -> None:
    parser = SseParser(max_event_chars=20)
    parser.feed(b"data: " + b"x" * 50 + b"\n\n")

    assert 1 == parser.dropped_events


def test_an_unfinished_line_over_the_limit_is_not_buffered() -> None:
    parser = SseParser(max_event_chars=20)
    for _ in range(100):
        parser.feed(b"x" * 10)

    assert 0 == parser._partial_chars


def test_the_event_after_an_oversized_one_is_parsed() -> None:
    body = b"data: " + b"x" * 30 + b"\ndata: y\n\ndata: ok\n\n"

    assert [SseEvent("message", "ok")] == parse(*[bytes([b]) for b in body], limit=20)


# Property tests -------------------------------------------------------------

_text = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
    max_size=20,
)
_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_.", min_size=1, max_size=12)
_events = st.lists(
    st.tuples(st.none() | _names, st.lists(_text, min_size=1, max_size=4)),
    max_size=6,
)


def _serialise(events: list[tuple[str | None, list[str]]], eol: str) -> bytes:
    lines = []
    for name, data in events:
        lines.append(": comment")
        if name is not None:
            lines.append(f"event: {name}")
        lines.extend(f"data: {value}" for value in data)
        lines.append("")

    return "".join(line + eol for line in lines).encode()


def _expected(events: list[tuple[str | None, list[str]]]) -> list[SseEvent]:
    return [SseEvent(name or "message", "\n".join(data)) for name, data in events]


def _split(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(body), *(c % (len(body) + 1) for c in cuts)})

    return [body[a:b] for a, b in itertools.pairwise(points)]


@given(_events, st.lists(st.integers(min_value=0), max_size=30))
def test_any_split_of_a_stream_gives_the_events_of_the_whole(events, cuts) -> None:
    body = _serialise(events, "\n")

    assert parse(body) == parse(*_split(body, cuts))


@given(_events, st.sampled_from(["\r\n", "\r", "\n"]), st.lists(st.integers(0)))
def test_a_stream_parses_to_its_events_with_any_line_end(events, eol, cuts) -> None:
    body = _serialise(events, eol)

    assert _expected(events) == parse(*_split(body, cuts))


@given(_events)
def test_crlf_and_lf_streams_give_the_same_events(events) -> None:
    assert parse(_serialise(events, "\n")) == parse(_serialise(events, "\r\n"))


@given(st.binary(max_size=300), st.lists(st.integers(min_value=0), max_size=20))
def test_garbage_never_raises(garbage, cuts) -> None:
    events = parse(*_split(garbage, cuts), limit=16)

    assert all(isinstance(event, SseEvent) for event in events)


@given(st.binary(max_size=300), st.lists(st.integers(min_value=0), max_size=20))
def test_any_split_of_garbage_gives_the_events_of_the_whole(garbage, cuts) -> None:
    assert parse(garbage, limit=16) == parse(*_split(garbage, cuts), limit=16)
