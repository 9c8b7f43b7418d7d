"""The normalised usage record every provider's response is reduced to."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens one call consumed, by kind. All counts are non-negative ints.

    Conventions (the same for every provider):

    - ``input_tokens`` is ALL input processed, cache reads and writes included.
    - ``cache_read_tokens`` and ``cache_write_tokens`` are subsets of input;
      ``cache_write_1h_tokens`` is the part of the writes held for one hour
      (the rest is the 5-minute kind); ``input_audio_tokens`` the part of the
      input that was audio.
    - ``output_tokens`` is all generated output, reasoning included;
      ``reasoning_tokens`` is a subset of it, ``None`` where the provider
      does not break it out; ``output_audio_tokens`` the part that was audio.
    - ``web_search_requests`` counts server-side web searches, billed per
      search beside the tokens.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int | None = None
    input_audio_tokens: int = 0
    output_audio_tokens: int = 0
    web_search_requests: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def consistent(self) -> Usage:
        """This usage with every subset fitting inside its whole.

        A provider's counters can contradict each other (more cached tokens
        than prompt tokens, a one-hour cache breakdown larger than the cache
        writes). The larger figure is taken as the truth, so nothing reported
        goes unpriced and no subset is priced twice.
        """
        write = max(self.cache_write_tokens, self.cache_write_1h_tokens)
        input_tokens = max(
            self.input_tokens, self.cache_read_tokens + write, self.input_audio_tokens
        )
        output_tokens = max(
            self.output_tokens, self.reasoning_tokens or 0, self.output_audio_tokens
        )
        if (write, input_tokens, output_tokens) == (
            self.cache_write_tokens,
            self.input_tokens,
            self.output_tokens,
        ):
            return self
        return replace(
            self,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_write_tokens=write,
        )

    def at_least(self, earlier: Usage | None) -> Usage:
        """This usage, no counter below ``earlier``'s: for the cumulative
        counts of a stream, where a later chunk may leave one out or restate
        it as 0 without undoing it."""
        if earlier is None:
            return self
        values = {}
        for name in _COUNTERS:
            mine, theirs = getattr(self, name), getattr(earlier, name)
            values[name] = theirs if mine is None else max(mine, theirs or 0)
        return Usage(**values)

    def as_dict(self) -> dict[str, int | None]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "cache_write_1h_tokens": self.cache_write_1h_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "input_audio_tokens": self.input_audio_tokens,
            "output_audio_tokens": self.output_audio_tokens,
            "web_search_requests": self.web_search_requests,
            "total_tokens": self.total_tokens,
        }


_COUNTERS = tuple(Usage.__dataclass_fields__)
