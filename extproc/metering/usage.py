"""The normalised usage record every provider's response is reduced to."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens one call consumed, by kind. All counts are non-negative ints.

    Conventions (the same for every provider):

    - ``input_tokens`` is ALL input processed, cache reads and writes included.
    - ``cache_read_tokens`` and ``cache_write_tokens`` are subsets of input;
      ``cache_write_1h_tokens`` is the part of the writes held for one hour
      (the rest is the 5-minute kind).
    - ``output_tokens`` is all generated output, reasoning included;
      ``reasoning_tokens`` is a subset of it, ``None`` where the provider
      does not break it out.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int | None = None

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def as_dict(self) -> dict[str, int | None]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "cache_write_1h_tokens": self.cache_write_1h_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "total_tokens": self.total_tokens,
        }
