"""Spans and metrics of AI calls; nothing here ever raises into the flow.

Every public method catches its own failure, logs it at WARNING and carries
on: telemetry that breaks must cost its data, never a request. The OTel SDK
adds the same guarantee for exporters, which run on their own threads.

Money stays integer micro-USD on spans and in the budget gauge. The one
exception is the spend counter, whose value is a float number of USD
because OTel counters and Prometheus samples are floats; it is a view for
dashboards, never a source of amounts (the ledger in Redis is).
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from extproc.money import MICRO_PER_USD
from extproc.telemetry import _names as n
from extproc.telemetry._export import (
    ExportConfig,
    PrometheusEndpoint,
    metric_readers,
    span_processors,
)
from extproc.telemetry._labels import LabelCap
from extproc.telemetry._record import CallRecord

log = logging.getLogger(__name__)

INSTRUMENTATION_NAME = "tollgate"
DEFAULT_MAX_LABEL_VALUES = 1000
SHUTDOWN_TIMEOUT_S = 5.0
_PROVISIONAL_SPAN_NAME = "tollgate.call"
_PROPAGATOR = TraceContextTextMapPropagator()

_F = TypeVar("_F", bound=Callable[..., Any])


def _never_raises(method: _F) -> _F:
    """Log any failure of ``method`` at WARNING and return None instead."""

    @functools.wraps(method)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except Exception as exc:
            log.warning(
                "telemetry failed; the call goes on without it",
                extra={"operation": method.__name__, "reason": repr(exc)},
            )
            return None

    return guarded  # type: ignore[return-value]


class Telemetry:
    """The gateway's tracer and meter, and the instruments on them.

    Build with ``from_environment`` (production) or ``for_tests``; the
    providers are this object's own, never the process-global ones, so two
    instances (or a test and the server) do not interfere.
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider,
        meter_provider: MeterProvider,
        max_label_values: int = DEFAULT_MAX_LABEL_VALUES,
        prometheus: PrometheusEndpoint | None = None,
    ) -> None:
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._prometheus = prometheus
        self._tracer = tracer_provider.get_tracer(INSTRUMENTATION_NAME)
        self.labels = LabelCap(max_label_values)
        self._budget_levels: dict[str, int] = {}
        self._budget_lock = threading.Lock()
        self._journal_depth: Callable[[], int] | None = None
        self._shut_down = False
        self._instruments = _Instruments(
            meter_provider.get_meter(INSTRUMENTATION_NAME),
            budget_levels=self._observe_budget_levels,
            journal_depth=self._observe_journal_depth,
        )

    @classmethod
    def from_environment(
        cls,
        *,
        service_name: str = "tollgate",
        prometheus_port: int | None = None,
        max_label_values: int = DEFAULT_MAX_LABEL_VALUES,
    ) -> Telemetry:
        """Exporters as the standard ``OTEL_*`` variables say (none when
        none is set), plus a Prometheus scrape endpoint on
        ``prometheus_port`` when given. Never raises: whatever cannot be set
        up is logged and left out."""
        try:
            config = ExportConfig.from_environ(
                os.environ, prometheus_port=prometheus_port
            )
            return cls._from_config(config, service_name, max_label_values)
        except Exception as exc:
            log.warning(
                "telemetry could not be set up; running without it",
                extra={"reason": repr(exc)},
            )
            return cls.disabled()

    @classmethod
    def for_tests(
        cls,
        span_exporter: SpanExporter,
        metric_reader: MetricReader,
        *,
        service_name: str = "tollgate-test",
        max_label_values: int = DEFAULT_MAX_LABEL_VALUES,
    ) -> Telemetry:
        """Spans exported synchronously to ``span_exporter`` as each ends;
        metrics read by ``metric_reader`` (an ``InMemoryMetricReader``).
        Nothing is registered to run at interpreter exit."""
        resource = Resource({"service.name": service_name})
        tracer_provider = TracerProvider(
            resource=resource, sampler=ParentBased(ALWAYS_ON), shutdown_on_exit=False
        )
        tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
        meter_provider = MeterProvider(
            metric_readers=[metric_reader], resource=resource, shutdown_on_exit=False
        )
        return cls(
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            max_label_values=max_label_values,
        )

    @classmethod
    def disabled(cls) -> Telemetry:
        """A Telemetry that records nothing anywhere."""
        return cls(
            tracer_provider=TracerProvider(shutdown_on_exit=False),
            meter_provider=MeterProvider(shutdown_on_exit=False),
        )

    @classmethod
    def _from_config(
        cls, config: ExportConfig, service_name: str, max_label_values: int
    ) -> Telemetry:
        if config.disabled:
            return cls.disabled()
        resource = Resource.create(
            {"service.name": config.service_name or service_name}
        )

        # The SDK's own exit hooks would wait, unbounded, for an exporter
        # that is backing off from a dead collector; ours gives up in time.
        tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        for processor in span_processors(config):
            tracer_provider.add_span_processor(processor)
        readers = metric_readers(config)
        prometheus = _prometheus(config)
        if prometheus is not None:
            readers.append(prometheus.reader)
        meter_provider = MeterProvider(
            metric_readers=readers, resource=resource, shutdown_on_exit=False
        )

        log.info(
            "telemetry configured",
            extra={
                "traces": ",".join(config.traces_exporters) or "none",
                "metrics": ",".join(config.metrics_exporters) or "none",
                "prometheus_port": config.prometheus_port if prometheus else None,
            },
        )
        telemetry = cls(
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            max_label_values=max_label_values,
            prometheus=prometheus,
        )
        atexit.register(telemetry.shutdown)
        return telemetry

    # One call.

    def start_call(
        self, *, traceparent: str | None, tracestate: str | None = None
    ) -> CallTrace:
        """Open the span of one call, a child of the caller's W3C trace
        context when ``traceparent`` is a valid one (a root span if not)."""
        try:
            carrier = {}
            if traceparent:
                carrier["traceparent"] = traceparent
                if tracestate:
                    carrier["tracestate"] = tracestate
            parent = _PROPAGATOR.extract(carrier)
            span = self._tracer.start_span(
                _PROVISIONAL_SPAN_NAME, context=parent, kind=SpanKind.CLIENT
            )
            return CallTrace(self, span)
        except Exception as exc:
            log.warning(
                "telemetry failed; the call goes on without it",
                extra={"operation": "start_call", "reason": repr(exc)},
            )
            return CallTrace(self, None)

    # Process-wide measurements.

    @_never_raises
    def record_budget_level(self, scope: str, level_micro_usd: int) -> None:
        """The money left in ``scope``'s budget, as last seen. Only for
        micro-USD buckets; a scope beyond the label cap is not reported (a
        gauge summed over unrelated budgets would mean nothing)."""
        if not self.labels.admits("scope", scope):
            return
        with self._budget_lock:
            self._budget_levels[scope] = int(level_micro_usd)

    @_never_raises
    def record_redis_error(self, operation: str) -> None:
        """Count one failed Redis operation (``reserve``, ``settle``, ...)."""
        attributes = {
            n.TOLLGATE_REDIS_OPERATION: self.labels.value("redis_operation", operation)
        }
        self._instruments.redis_errors.add(1, attributes)

    @_never_raises
    def set_journal_depth_source(self, callback: Callable[[], int]) -> None:
        """Report ``callback()`` as the local journal's depth at each
        collection."""
        self._journal_depth = callback

    @_never_raises
    def shutdown(self, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
        """Flush and stop the exporters, waiting at most ``timeout_s``: the
        SDK retries a collector that does not answer for tens of seconds,
        which would outlast a pod's grace period. What is still unsent then
        is dropped. Safe to call more than once; runs at interpreter exit
        if nobody called it, with the same bound."""
        if self._shut_down:
            return
        self._shut_down = True
        atexit.unregister(self.shutdown)
        stopping = threading.Thread(
            target=self._stop_exporters, name="telemetry-shutdown", daemon=True
        )
        stopping.start()
        stopping.join(timeout_s)
        if stopping.is_alive():
            log.warning(
                "telemetry exporters did not stop in time",
                extra={"timeout_s": timeout_s},
            )

    def _stop_exporters(self) -> None:
        for stop in (
            self._tracer_provider.shutdown,
            self._meter_provider.shutdown,
            self._prometheus.stop if self._prometheus else None,
        ):
            if stop is None:
                continue
            try:
                stop()
            except Exception as exc:
                log.warning(
                    "telemetry shutdown step failed", extra={"reason": repr(exc)}
                )

    # Used by CallTrace.

    def _record_phase(self, name: str, seconds: float) -> None:
        phase = {n.TOLLGATE_PHASE: self.labels.value("phase", name)}
        self._instruments.phase_duration.record(seconds, phase)

    def _record_call(self, record: CallRecord, seconds: float) -> None:
        genai = _genai_metric_attributes(record, self.labels)
        self._count_request(record, genai)
        if record.decision != n.DECISION_ALLOWED:
            return

        error = _error_type(record)
        duration = {**genai, n.ERROR_TYPE: error} if error else genai
        self._instruments.operation_duration.record(seconds, duration)
        self._record_tokens(record, genai)
        self._record_spend(record)

    def _count_request(self, record: CallRecord, genai: dict[str, Any]) -> None:
        requests = {
            n.TOLLGATE_DECISION: self.labels.value("decision", record.decision),
            n.TOLLGATE_PROVIDER: self.labels.value("provider", record.provider),
            n.GEN_AI_PROVIDER_NAME: genai[n.GEN_AI_PROVIDER_NAME],
        }
        if record.decision == n.DECISION_ALLOWED:
            requests[n.TOLLGATE_USAGE_OUTCOME] = record.outcome or n.NO_VALUE
        self._instruments.requests.add(1, requests)

    def _record_tokens(self, record: CallRecord, genai: dict[str, Any]) -> None:
        # The conventions forbid token metrics the provider did not report:
        # estimated usage shows in spend and on the span only.
        if record.usage is None or record.estimated:
            return
        histogram = self._instruments.token_usage
        input_type = {**genai, n.GEN_AI_TOKEN_TYPE: n.TOKEN_TYPE_INPUT}
        output_type = {**genai, n.GEN_AI_TOKEN_TYPE: n.TOKEN_TYPE_OUTPUT}
        histogram.record(record.usage.input_tokens, input_type)
        histogram.record(record.usage.output_tokens, output_type)

    def _record_spend(self, record: CallRecord) -> None:
        if record.cost_micro_usd <= 0:
            return
        labels = self.labels
        spend = {
            n.TOLLGATE_IDENTITY: labels.value("identity", record.identity),
            n.TOLLGATE_TEAM: labels.value("team", record.team),
            n.TOLLGATE_TOOL: labels.value("tool", record.tool),
            n.TOLLGATE_PROVIDER: labels.value("provider", record.provider),
            n.GEN_AI_REQUEST_MODEL: labels.value("model", _billed_model(record)),
            n.TOLLGATE_USAGE_ESTIMATED: record.estimated,
        }
        # The one float that holds money: a counter sample for dashboards.
        # Bills and budgets read integer micro-USD from the Redis ledger.
        self._instruments.spend.add(record.cost_micro_usd / MICRO_PER_USD, spend)

    def _observe_budget_levels(self, options: CallbackOptions) -> Iterator[Observation]:
        with self._budget_lock:
            levels = list(self._budget_levels.items())
        for scope, level in levels:
            yield Observation(level, {n.TOLLGATE_BUDGET_SCOPE: scope})

    def _observe_journal_depth(self, options: CallbackOptions) -> Iterator[Observation]:
        source = self._journal_depth
        if source is None:
            return
        try:
            depth = int(source())
        except Exception as exc:
            log.warning("journal depth could not be read", extra={"reason": repr(exc)})
            return
        yield Observation(depth)


class CallTrace:
    """The span and timings of one call, from ``start_call`` to ``finish``."""

    def __init__(self, telemetry: Telemetry, span: trace.Span | None) -> None:
        self._telemetry = telemetry
        self._span = span
        self._started = time.monotonic()
        self._finished = False

    def phase(self, name: str) -> AbstractContextManager[None]:
        """Time the block as ext_proc phase ``name`` (``request_headers``,
        ``request_body``, ``response_headers``, ``response_body``,
        ``settle``). The block's own exceptions pass through untouched."""
        return self._timed(name)

    @contextmanager
    def _timed(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            try:
                self._telemetry._record_phase(name, time.perf_counter() - started)
            except Exception as exc:
                log.warning(
                    "telemetry failed; the call goes on without it",
                    extra={"operation": "phase", "reason": repr(exc)},
                )

    def finish(self, record: CallRecord) -> None:
        """Describe the call on its span, end the span and record the call's
        metrics. Only the first finish counts; never raises."""
        if self._finished:
            return
        self._finished = True
        seconds = time.monotonic() - self._started

        if self._span is not None:
            try:
                _describe(self._span, record)
            except Exception as exc:
                log.warning(
                    "telemetry failed; the call goes on without it",
                    extra={
                        "operation": "finish",
                        "reason": repr(exc),
                        "request_id": record.request_id,
                    },
                )
            finally:
                _end(self._span)

        try:
            self._telemetry._record_call(record, seconds)
        except Exception as exc:
            log.warning(
                "telemetry failed; the call goes on without it",
                extra={
                    "operation": "finish",
                    "reason": repr(exc),
                    "request_id": record.request_id,
                },
            )


class _Instruments:
    """The metric instruments, created once per Telemetry."""

    def __init__(
        self,
        meter: Meter,
        *,
        budget_levels: Callable[[CallbackOptions], Iterator[Observation]],
        journal_depth: Callable[[CallbackOptions], Iterator[Observation]],
    ) -> None:
        self.token_usage = meter.create_histogram(
            n.GEN_AI_CLIENT_TOKEN_USAGE,
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=n.TOKEN_USAGE_BUCKETS,
        )
        self.operation_duration = meter.create_histogram(
            n.GEN_AI_CLIENT_OPERATION_DURATION,
            unit="s",
            description="GenAI operation duration, seen from the gateway.",
            explicit_bucket_boundaries_advisory=n.OPERATION_DURATION_BUCKETS,
        )
        self.spend = meter.create_counter(
            n.TOLLGATE_SPEND,
            unit="USD",
            description="Money charged for AI calls, metered and estimated.",
        )
        self.requests = meter.create_counter(
            n.TOLLGATE_REQUESTS,
            unit="{request}",
            description="AI calls by the gateway's decision.",
        )
        self.phase_duration = meter.create_histogram(
            n.TOLLGATE_PHASE_DURATION,
            unit="s",
            description="Time the gateway spent in one ext_proc phase.",
            explicit_bucket_boundaries_advisory=n.PHASE_DURATION_BUCKETS,
        )
        self.redis_errors = meter.create_counter(
            n.TOLLGATE_REDIS_ERRORS,
            unit="{error}",
            description="Redis operations that failed.",
        )
        meter.create_observable_gauge(
            n.TOLLGATE_BUDGET_REMAINING,
            callbacks=[budget_levels],
            unit="{micro_usd}",
            description="Money left in a budget scope when last seen, micro-USD.",
        )
        meter.create_observable_gauge(
            n.TOLLGATE_JOURNAL_DEPTH,
            callbacks=[journal_depth],
            unit="{entry}",
            description="Settlements waiting in the local journal.",
        )


def _describe(span: trace.Span, record: CallRecord) -> None:
    span.update_name(_span_name(record))
    span.set_attributes(_span_attributes(record))

    if record.decision != n.DECISION_ALLOWED:
        by = f" by {record.scope}" if record.scope else ""
        span.set_status(Status(StatusCode.ERROR, f"refused: {record.decision}{by}"))
    elif (error := _error_type(record)) is not None:
        span.set_status(Status(StatusCode.ERROR, f"upstream answered {error}"))


def _end(span: trace.Span) -> None:
    try:
        span.end()
    except Exception as exc:
        log.warning(
            "telemetry failed; the call goes on without it",
            extra={"operation": "end_span", "reason": repr(exc)},
        )


def _span_name(record: CallRecord) -> str:
    """``{operation} {request model}`` as the conventions ask, as far as
    known (a call refused before routing has neither)."""
    parts = [p for p in (record.operation, record.request_model) if p]
    return " ".join(parts) or _PROVISIONAL_SPAN_NAME


def _span_attributes(record: CallRecord) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        n.TOLLGATE_REQUEST_ID: record.request_id,
        n.TOLLGATE_DECISION: record.decision,
        n.TOLLGATE_COST_MICRO_USD: record.cost_micro_usd,
        n.TOLLGATE_USAGE_ESTIMATED: record.estimated,
    }
    optional: dict[str, Any] = {
        n.GEN_AI_OPERATION_NAME: record.operation,
        n.GEN_AI_PROVIDER_NAME: _provider_name(record.provider_family),
        n.GEN_AI_REQUEST_MODEL: record.request_model,
        n.GEN_AI_RESPONSE_MODEL: record.response_model,
        n.TOLLGATE_IDENTITY: record.identity,
        n.TOLLGATE_TEAM: record.team,
        n.TOLLGATE_PROJECT: record.project,
        n.TOLLGATE_TOOL: record.tool,
        n.TOLLGATE_PROVIDER: record.provider,
        n.TOLLGATE_BUDGET_SCOPE: record.scope,
        n.TOLLGATE_USAGE_OUTCOME: record.outcome,
        n.TOLLGATE_PRICE_SOURCE: record.price_source,
        n.ERROR_TYPE: _error_type(record),
    }
    attributes.update({key: value for key, value in optional.items() if value})
    if record.status is not None:
        attributes[n.HTTP_RESPONSE_STATUS_CODE] = record.status
    if record.finish_reasons:
        attributes[n.GEN_AI_RESPONSE_FINISH_REASONS] = list(record.finish_reasons)
    if record.usage is not None:
        attributes.update(_usage_attributes(record))

    return attributes


def _usage_attributes(record: CallRecord) -> dict[str, int]:
    """Token counts; on an estimated call they are the estimate, and
    ``tollgate.usage.estimated`` says so."""
    usage = record.usage
    assert usage is not None
    attributes = {
        n.GEN_AI_USAGE_INPUT_TOKENS: usage.input_tokens,
        n.GEN_AI_USAGE_OUTPUT_TOKENS: usage.output_tokens,
    }
    if usage.cache_read_tokens:
        attributes[n.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = usage.cache_read_tokens
    if usage.cache_write_tokens:
        attributes[n.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] = (
            usage.cache_write_tokens
        )
    if usage.reasoning_tokens is not None:
        attributes[n.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = usage.reasoning_tokens
    return attributes


def _genai_metric_attributes(record: CallRecord, labels: LabelCap) -> dict[str, Any]:
    attributes = {
        n.GEN_AI_OPERATION_NAME: labels.value("operation", record.operation),
        n.GEN_AI_PROVIDER_NAME: labels.value(
            "provider_name", _provider_name(record.provider_family)
        ),
        n.GEN_AI_REQUEST_MODEL: labels.value("model", record.request_model),
    }
    if record.response_model:
        attributes[n.GEN_AI_RESPONSE_MODEL] = labels.value(
            "model", record.response_model
        )
    return attributes


def _error_type(record: CallRecord) -> str | None:
    """The conventions' ``error.type``: the refusal code, or the upstream's
    HTTP status when it failed; None for a success."""
    if record.decision != n.DECISION_ALLOWED:
        return record.decision
    if record.status is not None and record.status >= 400:
        return str(record.status)
    if record.outcome == "upstream_error":
        return "upstream_error"
    return None


def _provider_name(family: str) -> str:
    return n.PROVIDER_NAMES.get(family, family)


def _billed_model(record: CallRecord) -> str:
    """The model the ledger books the spend under."""
    return record.request_model or record.response_model or "unknown"


def _prometheus(config: ExportConfig) -> PrometheusEndpoint | None:
    if config.prometheus_port is None:
        return None
    try:
        return PrometheusEndpoint(config.prometheus_host, config.prometheus_port)
    except Exception as exc:
        log.warning(
            "prometheus endpoint could not be started; left out",
            extra={"port": config.prometheus_port, "reason": repr(exc)},
        )
        return None
