"""Deciding what one call is charged: metered usage, an estimate, or nothing.

A body counts as complete when it ended, or when it sent the event its
format ends with (a client may hang up right after ``[DONE]``, before the
end of the body arrives: that cut lost nothing).

A usage the response did not report is unknown, never zero: a successful
call without usage is charged a length-based estimate and marked so. So is a
reported usage that cannot be true of a billed call: no input at all, or no
output beside generated text from a call that generates any (servers that
fill the usage object with zeros they did not count). An upstream error that
reports no usage, or every count as zero, is not charged, since providers do
not bill refused calls.

A length estimate is the same for every provider and for a body cut at any
point: the input the response reported, else one token per four bytes of
the request's text, its inline media counted as billed (``InputEstimate``);
the output the response reported so far or the text it carried, whichever
is more, up to the request's output cap. The text is
what the provider generated (content, reasoning, tool-call arguments),
never the JSON and event framing around it; a part of the body that could
not be read (an event that does not parse, one cut in its middle) counts
whole, since its text is unknown. So a stream cut before its first word
costs its prompt.

A non-streamed answer is generated, and billed, whole before its first byte
is sent: one whose body was cut (the upstream reset, a content-length that
promised more than came) lost its usage, not its output, and is charged its
output cap unless it reported the output before the cut.

A call cut before any answer came (the client gone before the response
headers, or Envoy answering itself for a provider that had taken the
request) depends on how it was asked for. A provider stops a stream whose
connection closes, and none of its text arrived: its prompt, as above. A
non-streamed answer may still be generated and billed whole, and its size
is never seen: the prompt and the output cap the reservation held.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from extproc.metering.usage import Usage
from extproc.providers.base import InputEstimate, Reading

# Roughly four bytes of English text or JSON per token for current BPE
# tokenizers; used only where the provider reported nothing.
BYTES_PER_TOKEN = 4

METERED = "metered"
FREE = "free"
UPSTREAM_ERROR = "upstream_error"
ESTIMATED_NO_USAGE = "estimated_no_usage"
ESTIMATED_CUT = "estimated_cut"
ESTIMATED_NO_RESPONSE = "estimated_no_response"
ESTIMATED_ZERO_USAGE = "estimated_zero_usage"
ESTIMATED_FAULT = "estimated_fault"  # the gateway failed to price it
REFUSED = "refused"  # answered by the gateway after reserving; never ran


@dataclass(frozen=True, slots=True)
class Charge:
    """The usage to price (None: charge nothing) and how it was obtained."""

    usage: Usage | None
    estimated: bool
    outcome: str


@dataclass(frozen=True, slots=True)
class CallFacts:
    """What the gateway saw of one call, from request to end of response."""

    billable: bool
    request_input: InputEstimate
    output_cap_tokens: int
    status: int | None = None  # None: no response headers arrived
    reading: Reading | None = None
    response_complete: bool = False
    streaming: bool = False  # the request asked for a stream
    # The status is Envoy's own (a 503, a 504) for a provider that had taken
    # the request: no answer came, though the provider may have run it.
    upstream_lost: bool = False


def decide_charge(facts: CallFacts) -> Charge:
    """The charge for a call, by the rules in this module's docstring."""
    if not facts.billable:
        return Charge(None, False, FREE)
    if facts.status is None or facts.upstream_lost:
        return Charge(_unanswered(facts), True, ESTIMATED_NO_RESPONSE)

    reading = facts.reading or Reading(usage=None, problem="no reader", complete=False)
    if reading.usage is not None:
        reading = replace(reading, usage=reading.usage.consistent())
    complete = (facts.response_complete or reading.ended) and reading.complete
    if _nothing_used(reading.usage) and _upstream_refused(facts, reading):
        return Charge(None, False, UPSTREAM_ERROR)
    if reading.usage is not None and complete:
        if _plausible(reading.usage, reading, facts.output_cap_tokens):
            return Charge(reading.usage, False, METERED)
        return Charge(_estimate(facts, reading), True, ESTIMATED_ZERO_USAGE)

    estimate = _estimate(facts, reading)
    outcome = ESTIMATED_CUT if not complete else ESTIMATED_NO_USAGE
    return Charge(estimate, True, outcome)


def _unanswered(facts: CallFacts) -> Usage:
    output = 0 if facts.streaming else facts.output_cap_tokens
    return Usage(facts.request_input.tokens(BYTES_PER_TOKEN), output)


def _plausible(usage: Usage, reading: Reading, output_cap_tokens: int) -> bool:
    """False for a usage that claims zero where the call visibly used tokens:
    every billed call reads some input, and text came back from some output,
    unless the call generates none (embeddings, capped at 0, whose body may
    echo the input texts)."""
    if usage.input_tokens == 0:
        return False
    generated = reading.text_chars > 0 and output_cap_tokens > 0
    return usage.output_tokens > 0 or not generated


def _nothing_used(usage: Usage | None) -> bool:
    """True for no usage, or one whose every count is zero (a failed
    Responses event reports its usage so)."""
    return usage is None or (usage.total_tokens == 0 and not usage.web_search_requests)


def _upstream_refused(facts: CallFacts, reading: Reading) -> bool:
    if facts.status is not None and facts.status >= 400:
        return True
    return (
        bool(reading.problem)
        and reading.problem.startswith("error")
        and not reading.text_chars
    )


def _estimate(facts: CallFacts, reading: Reading) -> Usage:
    seen = reading.usage or Usage()
    generated = reading.text_chars + reading.unread_chars
    output = min(facts.output_cap_tokens, _length_tokens(generated))
    if _answer_cut_after_generation(facts, reading) and not seen.output_tokens:
        output = facts.output_cap_tokens

    return Usage(
        input_tokens=seen.input_tokens or facts.request_input.tokens(BYTES_PER_TOKEN),
        output_tokens=max(seen.output_tokens, output),
        cache_read_tokens=seen.cache_read_tokens,
        cache_write_tokens=seen.cache_write_tokens,
        cache_write_1h_tokens=seen.cache_write_1h_tokens,
        reasoning_tokens=seen.reasoning_tokens,
        input_audio_tokens=seen.input_audio_tokens,
        output_audio_tokens=seen.output_audio_tokens,
        web_search_requests=seen.web_search_requests,
    ).consistent()


def _answer_cut_after_generation(facts: CallFacts, reading: Reading) -> bool:
    """True for a non-streamed answer whose body ended early: the provider
    had generated all of it before sending any."""
    cut = not (facts.response_complete or reading.ended)
    return cut and not facts.streaming


def _length_tokens(length: int) -> int:
    return math.ceil(length / BYTES_PER_TOKEN)
