"""Spans and metrics of metered, refused and estimated calls, read back from
in-memory exporters; telemetry failures never reach the caller."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExporter,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from extproc.metering.usage import Usage
from extproc.telemetry import CallRecord, Telemetry

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
ENVOY_SPAN_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{ENVOY_SPAN_ID}-01"

METERED = CallRecord(
    request_id="req-metered",
    identity="alice",
    team="platform",
    project="search",
    tool="claude-code",
    provider="anthropic-main",
    provider_family="anthropic",
    operation="chat",
    request_model="claude-sonnet-4",
    response_model="claude-sonnet-4-20250514",
    usage=Usage(
        input_tokens=1200,
        output_tokens=300,
        cache_read_tokens=1000,
        cache_write_tokens=100,
    ),
    cost_micro_usd=4_830,
    outcome="metered",
    estimated=False,
    decision="allowed",
    scope=None,
    status=200,
    finish_reasons=("end_turn",),
    price_source="genai-prices",
)
REFUSED = CallRecord(
    request_id="req-refused",
    identity="bob",
    team="platform",
    project="",
    tool="",
    provider="openai",
    provider_family="openai",
    operation="chat",
    request_model="gpt-4o",
    response_model=None,
    usage=None,
    cost_micro_usd=0,
    outcome="",
    estimated=False,
    decision="budget_exceeded",
    scope="user:bob",
    status=429,
    finish_reasons=(),
    price_source=None,
)
ESTIMATED = CallRecord(
    request_id="req-estimated",
    identity="carol",
    team="",
    project="",
    tool="sdk",
    provider="openai",
    provider_family="openai",
    operation="chat",
    request_model="gpt-4o-mini",
    response_model=None,
    usage=Usage(input_tokens=250, output_tokens=512),
    cost_micro_usd=345,
    outcome="estimated_cut",
    estimated=True,
    decision="allowed",
    scope=None,
    status=200,
    finish_reasons=(),
    price_source="genai-prices",
)


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def telemetry(
    spans: InMemorySpanExporter, reader: InMemoryMetricReader
) -> Iterator[Telemetry]:
    telemetry = Telemetry.for_tests(spans, reader)
    yield telemetry
    telemetry.shutdown()


def _finish(
    telemetry: Telemetry, record: CallRecord, traceparent: str | None = TRACEPARENT
) -> None:
    telemetry.start_call(traceparent=traceparent).finish(record)


def _only_span(spans: InMemorySpanExporter) -> ReadableSpan:
    (span,) = spans.get_finished_spans()
    return span


def _points(
    reader: InMemoryMetricReader, name: str
) -> list[tuple[dict[str, Any], Any]]:
    """(attributes, value) of every data point of metric ``name``: the sum
    of a counter, the value of a gauge, the sum of a histogram."""
    data = reader.get_metrics_data()
    points = []
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != name:
                    continue
                for point in metric.data.data_points:
                    value = (
                        point.sum if hasattr(point, "bucket_counts") else point.value
                    )
                    points.append((dict(point.attributes), value))
    return points


# Metered call.


def test_metered_span_is_a_child_of_envoys_trace(telemetry, spans) -> None:
    _finish(telemetry, METERED)

    span = _only_span(spans)
    assert (int(TRACE_ID, 16), int(ENVOY_SPAN_ID, 16)) == (
        span.context.trace_id,
        span.parent.span_id,
    )


def test_metered_span_is_named_operation_and_model_of_kind_client(
    telemetry, spans
) -> None:
    _finish(telemetry, METERED)

    span = _only_span(spans)
    assert ("chat claude-sonnet-4", SpanKind.CLIENT) == (span.name, span.kind)


def test_metered_span_carries_genai_attributes(telemetry, spans) -> None:
    _finish(telemetry, METERED)

    expected = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-sonnet-4",
        "gen_ai.response.model": "claude-sonnet-4-20250514",
        "gen_ai.usage.input_tokens": 1200,
        "gen_ai.usage.output_tokens": 300,
        "gen_ai.usage.cache_read.input_tokens": 1000,
        "gen_ai.usage.cache_creation.input_tokens": 100,
        "gen_ai.response.finish_reasons": ("end_turn",),
        "http.response.status_code": 200,
    }
    attributes = dict(_only_span(spans).attributes)
    assert expected == {key: attributes.get(key) for key in expected}


def test_metered_span_carries_tollgate_attributes(telemetry, spans) -> None:
    _finish(telemetry, METERED)

    expected = {
        "tollgate.request_id": "req-metered",
        "tollgate.cost_micro_usd": 4_830,
        "tollgate.identity": "alice",
        "tollgate.team": "platform",
        "tollgate.project": "search",
        "tollgate.tool": "claude-code",
        "tollgate.provider": "anthropic-main",
        "tollgate.decision": "allowed",
        "tollgate.usage.outcome": "metered",
        "tollgate.usage.estimated": False,
        "tollgate.price.source": "genai-prices",
    }
    attributes = dict(_only_span(spans).attributes)
    assert expected == {key: attributes.get(key) for key in expected}


def test_metered_span_has_no_error(telemetry, spans) -> None:
    _finish(telemetry, METERED)

    span = _only_span(spans)
    assert (StatusCode.UNSET, None) == (
        span.status.status_code,
        span.attributes.get("error.type"),
    )


def test_metered_call_records_token_usage_by_token_type(telemetry, reader) -> None:
    _finish(telemetry, METERED)

    by_type = {
        attrs["gen_ai.token.type"]: (
            value,
            attrs["gen_ai.provider.name"],
            attrs["gen_ai.request.model"],
        )
        for attrs, value in _points(reader, "gen_ai.client.token.usage")
    }
    assert {
        "input": (1200, "anthropic", "claude-sonnet-4"),
        "output": (300, "anthropic", "claude-sonnet-4"),
    } == by_type


def test_metered_call_adds_its_cost_in_usd_to_spend(telemetry, reader) -> None:
    _finish(telemetry, METERED)

    expected_labels = {
        "tollgate.identity": "alice",
        "tollgate.team": "platform",
        "tollgate.tool": "claude-code",
        "tollgate.provider": "anthropic-main",
        "gen_ai.request.model": "claude-sonnet-4",
        "tollgate.usage.estimated": False,
    }
    assert [(expected_labels, pytest.approx(0.00483))] == _points(
        reader, "tollgate.spend"
    )


def test_metered_call_counts_one_allowed_request(telemetry, reader) -> None:
    _finish(telemetry, METERED)

    [(attrs, value)] = _points(reader, "tollgate.requests")
    assert (1, "allowed", "metered") == (
        value,
        attrs["tollgate.decision"],
        attrs["tollgate.usage.outcome"],
    )


def test_metered_call_records_operation_duration(telemetry, reader) -> None:
    _finish(telemetry, METERED)

    [(attrs, seconds)] = _points(reader, "gen_ai.client.operation.duration")
    assert ("chat", "error.type" in attrs, True) == (
        attrs["gen_ai.operation.name"],
        False,
        seconds >= 0,
    )


# Refused call.


def test_refused_span_has_error_status_naming_reason_and_scope(
    telemetry, spans
) -> None:
    _finish(telemetry, REFUSED)

    span = _only_span(spans)
    assert (StatusCode.ERROR, "refused: budget_exceeded by user:bob") == (
        span.status.status_code,
        span.status.description,
    )


def test_refused_span_carries_decision_scope_and_error_type(telemetry, spans) -> None:
    _finish(telemetry, REFUSED)

    expected = {
        "tollgate.decision": "budget_exceeded",
        "tollgate.budget.scope": "user:bob",
        "error.type": "budget_exceeded",
        "http.response.status_code": 429,
        "tollgate.cost_micro_usd": 0,
        "gen_ai.usage.input_tokens": None,
    }
    attributes = dict(_only_span(spans).attributes)
    assert expected == {key: attributes.get(key) for key in expected}


def test_refused_call_is_counted_by_decision_without_spend_or_tokens(
    telemetry, reader
) -> None:
    _finish(telemetry, REFUSED)

    [(attrs, value)] = _points(reader, "tollgate.requests")
    assert (1, "budget_exceeded", [], []) == (
        value,
        attrs["tollgate.decision"],
        _points(reader, "tollgate.spend"),
        _points(reader, "gen_ai.client.token.usage"),
    )


def test_refused_before_routing_span_is_still_named(telemetry, spans) -> None:
    record = dataclasses.replace(
        REFUSED,
        identity="",
        team="",
        provider="",
        provider_family="",
        operation="",
        request_model=None,
        decision="identity_missing",
        scope=None,
        status=401,
    )

    _finish(telemetry, record)

    span = _only_span(spans)
    assert ("tollgate.call", "refused: identity_missing") == (
        span.name,
        span.status.description,
    )


# Estimated call.


def test_estimated_span_says_estimated_with_the_outcome(telemetry, spans) -> None:
    _finish(telemetry, ESTIMATED)

    expected = {
        "tollgate.usage.estimated": True,
        "tollgate.usage.outcome": "estimated_cut",
        "tollgate.cost_micro_usd": 345,
        "gen_ai.usage.input_tokens": 250,
        "gen_ai.usage.output_tokens": 512,
        "tollgate.team": None,
    }
    attributes = dict(_only_span(spans).attributes)
    assert expected == {key: attributes.get(key) for key in expected}


def test_estimated_call_records_no_genai_token_usage(telemetry, reader) -> None:
    _finish(telemetry, ESTIMATED)

    assert [] == _points(reader, "gen_ai.client.token.usage")


def test_estimated_call_spend_is_labelled_estimated(telemetry, reader) -> None:
    _finish(telemetry, ESTIMATED)

    [(attrs, usd)] = _points(reader, "tollgate.spend")
    assert (True, "(none)", pytest.approx(0.000345)) == (
        attrs["tollgate.usage.estimated"],
        attrs["tollgate.team"],
        usd,
    )


# Trace context.


def test_missing_traceparent_starts_a_root_span(telemetry, spans) -> None:
    _finish(telemetry, METERED, traceparent=None)

    assert None is _only_span(spans).parent


def test_malformed_traceparent_starts_a_root_span(telemetry, spans) -> None:
    _finish(telemetry, METERED, traceparent="00-not-a-trace-01")

    assert None is _only_span(spans).parent


def test_unsampled_parent_exports_no_span(telemetry, spans) -> None:
    _finish(telemetry, METERED, traceparent=f"00-{TRACE_ID}-{ENVOY_SPAN_ID}-00")

    assert () == tuple(spans.get_finished_spans())


def test_second_finish_is_ignored(telemetry, spans, reader) -> None:
    call = telemetry.start_call(traceparent=TRACEPARENT)

    call.finish(METERED)
    call.finish(METERED)

    [(_, requests)] = _points(reader, "tollgate.requests")
    assert (1, 1) == (len(spans.get_finished_spans()), requests)


# Phases, budgets, Redis, journal.


def test_phase_records_its_duration_by_name(telemetry, reader) -> None:
    call = telemetry.start_call(traceparent=None)

    with call.phase("request_body"):
        pass

    [(attrs, seconds)] = _points(reader, "tollgate.extproc.phase.duration")
    assert ({"tollgate.phase": "request_body"}, True) == (attrs, 0 <= seconds < 1)


def test_phase_lets_the_blocks_exception_through_and_still_times_it(
    telemetry, reader
) -> None:
    call = telemetry.start_call(traceparent=None)

    with pytest.raises(KeyError), call.phase("response_body"):
        raise KeyError("from the flow")

    assert 1 == len(_points(reader, "tollgate.extproc.phase.duration"))


def test_budget_level_is_reported_per_scope_in_micro_usd(telemetry, reader) -> None:
    telemetry.record_budget_level("user:alice", 1_000)
    telemetry.record_budget_level("user:alice", 750)
    telemetry.record_budget_level("team:platform", 20_000_000)

    levels = {
        a["tollgate.budget.scope"]: v
        for a, v in _points(reader, "tollgate.budget.remaining")
    }
    assert {"user:alice": 750, "team:platform": 20_000_000} == levels


def test_redis_errors_are_counted_by_operation(telemetry, reader) -> None:
    telemetry.record_redis_error("settle")
    telemetry.record_redis_error("settle")
    telemetry.record_redis_error("reserve")

    errors = {
        a["tollgate.redis.operation"]: v
        for a, v in _points(reader, "tollgate.redis.errors")
    }
    assert {"settle": 2, "reserve": 1} == errors


def test_journal_depth_is_read_from_its_source(telemetry, reader) -> None:
    telemetry.set_journal_depth_source(lambda: 17)

    assert [({}, 17)] == _points(reader, "tollgate.journal.depth")


# Cardinality cap.


def test_identities_beyond_the_cap_are_reported_as_other(spans, reader) -> None:
    telemetry = Telemetry.for_tests(spans, reader, max_label_values=2)

    for identity in ("alice", "bob", "carol", "dave"):
        _finish(telemetry, dataclasses.replace(METERED, identity=identity))

    spend = sorted(
        (a["tollgate.identity"], v) for a, v in _points(reader, "tollgate.spend")
    )
    assert [
        ("alice", pytest.approx(0.00483)),
        ("bob", pytest.approx(0.00483)),
        ("other", pytest.approx(0.00966)),
    ] == spend


def test_capped_identity_keeps_its_true_value_on_the_span(spans, reader) -> None:
    telemetry = Telemetry.for_tests(spans, reader, max_label_values=1)

    _finish(telemetry, dataclasses.replace(METERED, identity="alice"))
    _finish(telemetry, dataclasses.replace(METERED, identity="bob"))

    assert ["alice", "bob"] == [
        s.attributes["tollgate.identity"] for s in spans.get_finished_spans()
    ]


def test_budget_scopes_beyond_the_cap_are_not_reported(spans, reader) -> None:
    telemetry = Telemetry.for_tests(spans, reader, max_label_values=1)

    telemetry.record_budget_level("user:alice", 1)
    telemetry.record_budget_level("user:bob", 2)

    assert [({"tollgate.budget.scope": "user:alice"}, 1)] == _points(
        reader, "tollgate.budget.remaining"
    )


# Failures never reach the caller.


class _BrokenExporter(SpanExporter):
    def export(self, spans) -> SpanExportResult:
        raise ConnectionError("collector unreachable")

    def shutdown(self) -> None:
        raise ConnectionError("collector unreachable")


def test_broken_span_exporter_does_not_raise_and_metrics_go_on(reader) -> None:
    telemetry = Telemetry.for_tests(_BrokenExporter(), reader)

    _finish(telemetry, METERED)

    assert [1] == [v for _, v in _points(reader, "tollgate.requests")]
    telemetry.shutdown()


class _BrokenMetricExporter(MetricExporter):
    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    def export(self, metrics_data, timeout_millis: float = 10_000, **kwargs):
        self.attempts += 1
        raise ConnectionError("collector unreachable")

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        raise ConnectionError("collector unreachable")


def test_broken_metric_exporter_does_not_raise(spans) -> None:
    exporter = _BrokenMetricExporter()
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    telemetry = Telemetry.for_tests(spans, reader)

    _finish(telemetry, METERED)
    telemetry.shutdown()

    assert (1, True) == (len(spans.get_finished_spans()), exporter.attempts >= 1)


def test_failing_journal_source_is_logged_not_raised(telemetry, reader, caplog) -> None:
    def broken() -> int:
        raise OSError("journal file gone")

    telemetry.set_journal_depth_source(broken)

    with caplog.at_level(logging.WARNING):
        points = _points(reader, "tollgate.journal.depth")
    assert ([], True) == (points, "journal depth could not be read" in caplog.text)


def test_malformed_record_is_logged_not_raised(telemetry, spans, caplog) -> None:
    record = dataclasses.replace(METERED, usage="not a usage")  # type: ignore[arg-type]

    with caplog.at_level(logging.WARNING):
        _finish(telemetry, record)

    assert (1, True) == (
        len(spans.get_finished_spans()),
        "telemetry failed" in caplog.text,
    )


def test_shutdown_twice_does_not_raise(telemetry) -> None:
    telemetry.shutdown()

    assert None is telemetry.shutdown()
