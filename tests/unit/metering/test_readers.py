"""Shared reader building blocks: counters, bounded JSON, array splitting."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from extproc.metering.readers import (
    FreeReader,
    JsonBodyReader,
    JsonSplitter,
    MalformedUsage,
    JsonSequenceReader,
    SseReader,
    Tally,
    body_kind,
    count,
)
from extproc.metering.sse import SseEvent
from extproc.metering.usage import Usage


def take_usage(obj, tally: Tally) -> None:
    tally.usage = Usage(input_tokens=count(obj["usage"], "n") or 0)


def split(data: bytes, step: int = 1) -> list[bytes]:
    splitter = JsonSplitter(max_element_bytes=1 << 20)
    elements = []
    for i in range(0, len(data), step):
        elements.extend(splitter.feed(data[i : i + step]))

    return elements


@pytest.mark.parametrize("value", [-1, "3", True, 1.5])
def test_count_rejects_what_is_not_a_count(value) -> None:
    with pytest.raises(MalformedUsage):
        count({"n": value}, "n")


def test_count_of_an_absent_or_null_key_is_none() -> None:
    assert (None, None) == (count({}, "n"), count({"n": None}, "n"))


def test_count_accepts_an_integral_float() -> None:
    assert 12 == count({"n": 12.0}, "n")


def test_tally_without_usage_or_problem_says_no_usage() -> None:
    assert "no usage in response" == Tally().reading().problem


def test_tally_keeps_each_problem_once() -> None:
    tally = Tally()
    tally.note("a")
    tally.note("a")

    assert "a" == tally.reading().problem


def test_json_body_reader_reads_a_body_fed_in_pieces() -> None:
    reader = JsonBodyReader(take_usage)
    for piece in (b'{"usage": ', b'{"n": 7}}'):
        reader.feed(piece)

    assert Usage(7) == reader.finish().usage


def test_json_body_reader_over_its_cap_reads_usage_from_the_tail() -> None:
    reader = JsonBodyReader(take_usage, max_bytes=100)
    reader.feed(b'{"data": "' + b"x" * 500_000 + b'",')
    reader.feed(b' "usage": {"n": 9}}')

    reading = reader.finish()

    assert (Usage(9), "body over 100 bytes; only its tail was read") == (
        reading.usage,
        reading.problem,
    )


def test_json_body_reader_notes_an_unparseable_body() -> None:
    reader = JsonBodyReader(take_usage)
    reader.feed(b"<html>502</html>")

    assert "unparseable JSON body" == reader.finish().problem


def test_json_body_reader_notes_a_malformed_counter() -> None:
    reader = JsonBodyReader(take_usage)
    reader.feed(b'{"usage": {"n": -4}}')

    assert "malformed usage: n=-4" == reader.finish().problem


def test_json_body_reader_turns_an_interpreter_bug_into_a_problem() -> None:
    reader = JsonBodyReader(lambda obj, tally: obj["missing"])
    reader.feed(b"{}")

    assert "reader fault: KeyError" == reader.finish().problem


def test_splitter_yields_each_array_element_when_complete() -> None:
    data = b'[{"a": "]}\\"["}, {"b": [1, {"c": 2}]}]'

    assert [b'{"a": "]}\\"["}', b'{"b": [1, {"c": 2}]}'] == split(data)


def test_splitter_yields_a_single_top_level_object_whole() -> None:
    assert [b'{"error": {"code": 429}}'] == split(b' {"error": {"code": 429}} ')


def test_splitter_drops_an_element_over_its_cap() -> None:
    splitter = JsonSplitter(max_element_bytes=10)
    elements = splitter.feed(b'[{"a": "' + b"x" * 50 + b'"}, {"b": 1}]')

    assert ([b'{"b": 1}'], 1) == (elements, splitter.dropped)


@given(
    st.lists(
        st.dictionaries(st.text(max_size=5), st.text(max_size=8) | st.integers()),
        max_size=5,
    ),
    st.integers(min_value=1, max_value=9),
)
def test_splitter_gives_the_same_elements_for_any_chunk_size(items, step) -> None:
    data = json.dumps(items).encode()

    assert items == [json.loads(e) for e in split(data, step)]


@given(st.binary(max_size=200))
def test_splitter_never_raises_on_garbage(garbage: bytes) -> None:
    assert isinstance(split(garbage, 3), list)


def test_free_reader_reads_zero_known_usage() -> None:
    assert Usage() == FreeReader().finish().usage


@pytest.mark.parametrize(
    "content_type, streaming, kind",
    [
        ("text/event-stream; charset=utf-8", False, "sse"),
        ("application/json", True, "json"),
        ("application/vnd.amazon.eventstream", True, "eventstream"),
        ("", True, "sse"),
        ("", False, "json"),
    ],
)
def test_body_kind_follows_the_content_type_first(
    content_type, streaming, kind
) -> None:
    assert kind == body_kind(content_type, streaming=streaming)


def test_count_rejects_a_counter_no_call_could_reach() -> None:
    with pytest.raises(MalformedUsage):
        count({"n": 10**30}, "n")


class _Collector(SseReader):
    def __init__(self, max_event_bytes: int = 1 << 20) -> None:
        super().__init__(max_event_bytes=max_event_bytes)
        self.data: list[str] = []

    def on_event(self, event: SseEvent) -> None:
        self.data.append(event.data)


def collect(body: bytes) -> list[str]:
    reader = _Collector()
    reader.feed(body)
    reader.finish()

    return reader.data


def test_sse_events_without_blank_lines_between_them_are_read_one_by_one() -> None:
    # Some servers end each event with one line break instead of a blank line.
    body = b'data: {"a": 1}\ndata: {"b": 2}\ndata: [DONE]\n'

    assert ['{"a": 1}', '{"b": 2}', "[DONE]"] == collect(body)


def test_sse_event_whose_data_lines_make_one_json_value_stays_whole() -> None:
    body = b'data: {"a":\ndata:  1}\n\n'

    assert ['{"a":\n 1}'] == collect(body)


class _Objects(JsonSequenceReader):
    def on_object(self, obj) -> None:
        self.tally.see_model(obj.get("m"))


def test_an_sse_reading_that_dropped_an_oversized_event_is_not_whole() -> None:
    # What the dropped event said (a final chunk with an image and the
    # usage, say) is unknown, so the reading cannot be taken as complete.
    reader = _Collector(max_event_bytes=64)
    reader.feed(b'data: {"m": "small"}\n\ndata: {"image": "' + b"A" * 100 + b'"}\n\n')

    assert False is reader.finish().complete


def test_a_json_array_reading_that_dropped_an_oversized_element_is_not_whole() -> None:
    reader = _Objects(max_event_bytes=64)
    reader.feed(b'[{"m": "small"}, {"image": "' + b"A" * 100 + b'"}]')

    assert False is reader.finish().complete
