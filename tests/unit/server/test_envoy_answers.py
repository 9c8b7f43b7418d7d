"""Envoy's own answers: which ones stand for a provider that had the call."""

from __future__ import annotations

import pytest

from extproc.server.call import _lost_after_sending


@pytest.mark.parametrize(
    "details",
    [
        "upstream_reset_before_response_started{connection_termination}",
        "upstream_reset_before_response_started{remote_reset}",
        "upstream_reset_before_response_started{protocol_error}",
        "upstream_response_timeout",
        "stream_idle_timeout",
    ],
)
def test_envoy_answering_after_the_request_went_out_is_a_lost_answer(details) -> None:
    assert _lost_after_sending(details)


@pytest.mark.parametrize(
    "details",
    [
        "via_upstream",
        "",
        "upstream_reset_before_response_started{remote_connection_failure}",
        "upstream_reset_before_response_started{local_connection_failure}",
        "upstream_reset_before_response_started{connection_timeout}",
        "upstream_reset_before_response_started{overflow}",
        "upstream_reset_before_response_started{remote_refused_stream_reset}",
        "no_healthy_upstream",
    ],
)
def test_provider_answers_and_requests_never_sent_are_not_lost_answers(
    details,
) -> None:
    assert not _lost_after_sending(details)
