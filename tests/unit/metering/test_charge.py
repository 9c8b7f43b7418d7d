"""What a call is charged: metered, estimated, or nothing; never a silent zero."""

from __future__ import annotations

from extproc.metering.charge import ESTIMATED_NO_RESPONSE, CallFacts, decide_charge
from extproc.metering.usage import Usage
from extproc.providers.base import InputEstimate, Reading

USAGE = Usage(input_tokens=100, output_tokens=20)


def _facts(**overrides) -> CallFacts:
    base = dict(
        billable=True,
        request_input=InputEstimate(4000),
        output_cap_tokens=500,
        status=200,
        reading=Reading(usage=USAGE),
        response_complete=True,
    )
    return CallFacts(**{**base, **overrides})


def test_complete_body_with_usage_is_metered() -> None:
    charge = decide_charge(_facts())

    assert (USAGE, False, "metered") == (charge.usage, charge.estimated, charge.outcome)


def test_free_endpoint_is_not_charged() -> None:
    assert (None, "free") == (decide_charge(_facts(billable=False)).usage, "free")


def test_non_streamed_call_cut_before_its_answer_charges_the_output_cap() -> None:
    charge = decide_charge(_facts(status=None, reading=None, streaming=False))

    assert (Usage(1000, 500), True, "estimated_no_response") == (
        charge.usage,
        charge.estimated,
        charge.outcome,
    )


def test_stream_cut_before_its_answer_is_charged_its_prompt_only() -> None:
    charge = decide_charge(_facts(status=None, reading=None, streaming=True))

    assert (Usage(1000, 0), True, "estimated_no_response") == (
        charge.usage,
        charge.estimated,
        charge.outcome,
    )


def test_http_error_without_usage_is_not_charged() -> None:
    charge = decide_charge(
        _facts(status=429, reading=Reading(usage=None, problem="error: x"))
    )

    assert (None, False, "upstream_error") == (
        charge.usage,
        charge.estimated,
        charge.outcome,
    )


def test_error_event_before_any_text_is_not_charged() -> None:
    reading = Reading(usage=None, problem="error: overloaded_error: Overloaded")

    assert "upstream_error" == decide_charge(_facts(reading=reading)).outcome


def test_error_reporting_a_usage_of_zeros_before_any_text_is_not_charged() -> None:
    # A Responses stream's response.failed event with every counter at 0.
    reading = Reading(usage=Usage(), problem="error: server_error: failed", ended=True)

    charge = decide_charge(_facts(reading=reading))

    assert (None, "upstream_error") == (charge.usage, charge.outcome)


def test_error_event_after_generated_text_is_estimated() -> None:
    reading = Reading(usage=None, problem="error: tool_use_failed", text_chars=400)

    charge = decide_charge(_facts(reading=reading))

    assert ("estimated_no_usage", 100) == (charge.outcome, charge.usage.output_tokens)


def test_success_without_usage_is_estimated_from_lengths_not_zero() -> None:
    reading = Reading(usage=None, problem="no usage in response", text_chars=80)

    charge = decide_charge(_facts(reading=reading))

    assert (Usage(1000, 20), True) == (charge.usage, charge.estimated)


def test_length_estimate_never_exceeds_the_output_cap() -> None:
    reading = Reading(usage=None, text_chars=1_000_000)

    assert 500 == decide_charge(_facts(reading=reading)).usage.output_tokens


def test_cut_stream_keeps_reported_input_and_estimates_output() -> None:
    partial = Usage(input_tokens=300, output_tokens=1, cache_read_tokens=200)
    reading = Reading(usage=partial, complete=False, text_chars=400)

    charge = decide_charge(_facts(reading=reading, streaming=True))

    assert "estimated_cut" == charge.outcome
    assert (300, 200, 100) == (
        charge.usage.input_tokens,
        charge.usage.cache_read_tokens,
        charge.usage.output_tokens,
    )


def test_cut_stream_without_generated_text_is_charged_its_prompt_only() -> None:
    reading = Reading(usage=None, problem="stream ended before [DONE]", complete=False)

    charge = decide_charge(
        _facts(reading=reading, response_complete=False, streaming=True)
    )

    assert (Usage(1000, 0), "estimated_cut") == (charge.usage, charge.outcome)


def test_a_prompt_estimate_counts_inline_media_as_billed_not_by_length() -> None:
    reading = Reading(usage=None, problem="stream ended before [DONE]", complete=False)
    request_input = InputEstimate(text_bytes=400, media_tokens=4000)

    charge = decide_charge(
        _facts(
            request_input=request_input,
            reading=reading,
            response_complete=False,
            streaming=True,
        )
    )

    assert Usage(100 + 4000, 0) == charge.usage


def test_unread_body_counts_as_generated_text() -> None:
    reading = Reading(usage=None, complete=False, text_chars=40, unread_chars=360)

    charge = decide_charge(
        _facts(reading=reading, response_complete=False, streaming=True)
    )

    assert 100 == charge.usage.output_tokens


def test_response_not_finished_is_estimated_even_with_usage() -> None:
    assert "estimated_cut" == decide_charge(_facts(response_complete=False)).outcome


def test_usage_of_all_zeros_on_a_success_is_estimated_not_free() -> None:
    reading = Reading(usage=Usage(0, 0), text_chars=80)

    charge = decide_charge(_facts(reading=reading))

    assert (Usage(1000, 20), True, "estimated_zero_usage") == (
        charge.usage,
        charge.estimated,
        charge.outcome,
    )


def test_zero_input_is_estimated_and_the_reported_output_kept() -> None:
    reading = Reading(usage=Usage(0, 7), text_chars=4)

    charge = decide_charge(_facts(reading=reading))

    assert (1000, 7, "estimated_zero_usage") == (
        charge.usage.input_tokens,
        charge.usage.output_tokens,
        charge.outcome,
    )


def test_zero_output_beside_generated_text_is_estimated() -> None:
    reading = Reading(usage=Usage(100, 0), text_chars=40)

    charge = decide_charge(_facts(reading=reading))

    assert (Usage(100, 10), "estimated_zero_usage") == (charge.usage, charge.outcome)


def test_zero_output_without_text_is_metered() -> None:
    reading = Reading(usage=Usage(100, 0), text_chars=0)

    assert "metered" == decide_charge(_facts(reading=reading)).outcome


def test_zero_output_of_a_call_that_generates_nothing_is_metered_beside_text() -> None:
    # Cohere Embed on Bedrock echoes its input texts beside the embeddings.
    reading = Reading(usage=Usage(3, 0), text_chars=2)

    charge = decide_charge(_facts(reading=reading, output_cap_tokens=0))

    assert (Usage(3, 0), "metered") == (charge.usage, charge.outcome)


def test_stream_that_sent_its_last_event_is_metered_though_its_body_was_cut() -> None:
    ended = Reading(usage=USAGE, ended=True)

    charge = decide_charge(_facts(reading=ended, response_complete=False))

    assert (USAGE, False, "metered") == (charge.usage, charge.estimated, charge.outcome)


def test_non_streamed_answer_cut_in_its_body_charges_the_output_cap() -> None:
    # A JSON answer is generated whole before its first byte is sent.
    reading = Reading(usage=None, problem="unparseable JSON body", complete=False)

    charge = decide_charge(_facts(reading=reading, response_complete=False))

    assert (Usage(1000, 500), True, "estimated_cut") == (
        charge.usage,
        charge.estimated,
        charge.outcome,
    )


def test_non_streamed_answer_cut_after_its_usage_keeps_the_reported_output() -> None:
    reading = Reading(usage=Usage(100, 20), complete=False)

    charge = decide_charge(_facts(reading=reading, response_complete=False))

    assert (Usage(100, 20), "estimated_cut") == (charge.usage, charge.outcome)


def test_unreadable_but_whole_json_answer_is_estimated_from_its_length() -> None:
    reading = Reading(usage=None, complete=False, unread_chars=400)

    charge = decide_charge(_facts(reading=reading, response_complete=True))

    assert Usage(1000, 100) == charge.usage


def test_envoys_own_answer_for_a_provider_that_had_the_call_is_unanswered() -> None:
    facts = CallFacts(
        billable=True,
        request_input=InputEstimate(text_bytes=400),
        output_cap_tokens=300,
        status=503,
        upstream_lost=True,
    )

    charge = decide_charge(facts)

    assert (ESTIMATED_NO_RESPONSE, 100, 300) == (
        charge.outcome,
        charge.usage.input_tokens,
        charge.usage.output_tokens,
    )
