"""The usage record: subsets that always fit inside their wholes."""

from __future__ import annotations

from extproc.metering.usage import Usage


def test_a_consistent_usage_is_returned_as_it_is() -> None:
    usage = Usage(100, 20, cache_read_tokens=50, reasoning_tokens=5)

    assert usage is usage.consistent()


def test_more_cached_than_input_raises_the_input_to_the_cached() -> None:
    assert 100 == Usage(10, 1, cache_read_tokens=100).consistent().input_tokens


def test_a_one_hour_breakdown_beyond_the_writes_raises_the_writes() -> None:
    fixed = Usage(3005, 42, cache_write_1h_tokens=3000).consistent()

    assert (3000, 3005) == (fixed.cache_write_tokens, fixed.input_tokens)


def test_reasoning_beyond_the_output_raises_the_output() -> None:
    assert 386 == Usage(12, 1, reasoning_tokens=386).consistent().output_tokens
