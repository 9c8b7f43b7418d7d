"""Where telemetry goes, from the standard ``OTEL_*`` environment variables.

The variables are read once, by ``ExportConfig.from_environ``. Exporter
endpoints, headers, timeouts, compression and certificates are read by the
OTLP exporters themselves from their own ``OTEL_EXPORTER_OTLP_*`` variables.

Unlike the SDK's automatic set-up, nothing is exported unless asked for: a
gateway started without any ``OTEL_*`` variable exports nothing, instead of
retrying a collector on localhost forever.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

log = logging.getLogger(__name__)

OTEL_SDK_DISABLED = "OTEL_SDK_DISABLED"
"""``true`` turns every signal off. Default ``false``."""

OTEL_SERVICE_NAME = "OTEL_SERVICE_NAME"
"""The ``service.name`` resource attribute. Default: the caller's name."""

OTEL_TRACES_EXPORTER = "OTEL_TRACES_EXPORTER"
"""Comma-separated: ``otlp``, ``console``, ``none``. Default ``otlp`` when an
OTLP endpoint variable is set, else ``none``."""

OTEL_METRICS_EXPORTER = "OTEL_METRICS_EXPORTER"
"""Comma-separated: ``otlp``, ``prometheus``, ``console``, ``none``. Default
``otlp`` when an OTLP endpoint variable is set, else ``none``."""

OTEL_EXPORTER_OTLP_PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL"
"""``grpc`` or ``http/protobuf`` for both signals. Default ``grpc``, as the
Python SDK's own ``otlp`` exporter."""

OTEL_EXPORTER_OTLP_TRACES_PROTOCOL = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
"""Overrides ``OTEL_EXPORTER_OTLP_PROTOCOL`` for spans."""

OTEL_EXPORTER_OTLP_METRICS_PROTOCOL = "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"
"""Overrides ``OTEL_EXPORTER_OTLP_PROTOCOL`` for metrics."""

OTEL_EXPORTER_OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
OTEL_EXPORTER_OTLP_METRICS_ENDPOINT = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
"""Where OTLP goes; read by the exporters. Setting one turns OTLP on for
its signals unless the ``*_EXPORTER`` variable says otherwise."""

OTEL_METRIC_EXPORT_INTERVAL = "OTEL_METRIC_EXPORT_INTERVAL"
"""Milliseconds between two metric exports. Default 60000."""

OTEL_BSP_MAX_EXPORT_BATCH_SIZE = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"
"""Spans sent in one export. Default 128 here (the SDK's is 512): the batch
is encoded in Python on an exporter thread that holds the interpreter lock
meanwhile, and a 512-span batch stalled the request path long enough to
double the gateway's p99 latency at half load in ``bench/``; 128 cost a few
percent more CPU and took most of that tail away."""

OTEL_EXPORTER_PROMETHEUS_HOST = "OTEL_EXPORTER_PROMETHEUS_HOST"
"""Address of the Prometheus scrape endpoint. Default ``0.0.0.0``."""

OTEL_EXPORTER_PROMETHEUS_PORT = "OTEL_EXPORTER_PROMETHEUS_PORT"
"""Port of the Prometheus scrape endpoint. Default 9464."""

GRPC = "grpc"
HTTP_PROTOBUF = "http/protobuf"
DEFAULT_EXPORT_INTERVAL_MS = 60_000
DEFAULT_SPAN_BATCH_SIZE = 128
DEFAULT_PROMETHEUS_HOST = "0.0.0.0"
DEFAULT_PROMETHEUS_PORT = 9464


@dataclass(frozen=True, slots=True)
class ExportConfig:
    """The parsed export settings; see the constants above for each."""

    disabled: bool = False
    service_name: str | None = None
    traces_exporters: tuple[str, ...] = ()
    metrics_exporters: tuple[str, ...] = ()
    traces_protocol: str = GRPC
    metrics_protocol: str = GRPC
    export_interval_ms: int = DEFAULT_EXPORT_INTERVAL_MS
    span_batch_size: int = DEFAULT_SPAN_BATCH_SIZE
    prometheus_host: str = DEFAULT_PROMETHEUS_HOST
    prometheus_port: int | None = None

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str], *, prometheus_port: int | None = None
    ) -> ExportConfig:
        """Parse ``environ``; a bad value is logged and its default used."""
        base = environ.get(OTEL_EXPORTER_OTLP_ENDPOINT)
        traces = _exporters(
            environ.get(OTEL_TRACES_EXPORTER),
            otlp_configured=bool(
                base or environ.get(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
            ),
        )
        metrics = _exporters(
            environ.get(OTEL_METRICS_EXPORTER),
            otlp_configured=bool(
                base or environ.get(OTEL_EXPORTER_OTLP_METRICS_ENDPOINT)
            ),
        )
        if "prometheus" in metrics and prometheus_port is None:
            prometheus_port = _int(
                environ, OTEL_EXPORTER_PROMETHEUS_PORT, DEFAULT_PROMETHEUS_PORT
            )
        shared = environ.get(OTEL_EXPORTER_OTLP_PROTOCOL)

        return cls(
            disabled=environ.get(OTEL_SDK_DISABLED, "").strip().lower() == "true",
            service_name=environ.get(OTEL_SERVICE_NAME) or None,
            traces_exporters=traces,
            metrics_exporters=tuple(m for m in metrics if m != "prometheus"),
            traces_protocol=_protocol(
                environ.get(OTEL_EXPORTER_OTLP_TRACES_PROTOCOL) or shared
            ),
            metrics_protocol=_protocol(
                environ.get(OTEL_EXPORTER_OTLP_METRICS_PROTOCOL) or shared
            ),
            export_interval_ms=_int(
                environ, OTEL_METRIC_EXPORT_INTERVAL, DEFAULT_EXPORT_INTERVAL_MS
            ),
            span_batch_size=_int(
                environ, OTEL_BSP_MAX_EXPORT_BATCH_SIZE, DEFAULT_SPAN_BATCH_SIZE
            ),
            prometheus_host=environ.get(OTEL_EXPORTER_PROMETHEUS_HOST)
            or DEFAULT_PROMETHEUS_HOST,
            prometheus_port=prometheus_port,
        )


def span_processors(config: ExportConfig) -> list[SpanProcessor]:
    """A batching processor per configured span exporter; one that cannot
    be built is logged and left out."""
    processors: list[SpanProcessor] = []
    for name in config.traces_exporters:
        exporter = _build(name, "traces", config.traces_protocol)
        if exporter is not None:
            processors.append(
                BatchSpanProcessor(
                    exporter, max_export_batch_size=config.span_batch_size
                )
            )
    return processors


def metric_readers(config: ExportConfig) -> list[MetricReader]:
    """A periodic reader per configured metric exporter; one that cannot be
    built is logged and left out."""
    readers: list[MetricReader] = []
    for name in config.metrics_exporters:
        exporter = _build(name, "metrics", config.metrics_protocol)
        if exporter is not None:
            readers.append(
                PeriodicExportingMetricReader(
                    exporter, export_interval_millis=config.export_interval_ms
                )
            )
    return readers


class PrometheusEndpoint:
    """A scrape endpoint serving one private registry (so that two
    ``Telemetry`` instances in one process never clash)."""

    def __init__(self, host: str, port: int) -> None:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry(auto_describe=True)
        self.reader = PrometheusMetricReader(registry=registry)
        self._server, self._thread = start_http_server(
            port, addr=host, registry=registry
        )

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _build(name: str, signal: str, protocol: str) -> Any:
    try:
        if name == "console":
            return (
                ConsoleSpanExporter() if signal == "traces" else ConsoleMetricExporter()
            )
        if name in ("otlp", "otlp_proto_grpc", "otlp_proto_http"):
            if name != "otlp":
                protocol = GRPC if name == "otlp_proto_grpc" else HTTP_PROTOBUF
            return _otlp(signal, protocol)
        log.warning(
            "unknown telemetry exporter; ignored",
            extra={"exporter": name, "signal": signal},
        )
    except Exception as exc:
        log.warning(
            "telemetry exporter could not be built; ignored",
            extra={"exporter": name, "signal": signal, "reason": repr(exc)},
        )
    return None


def _otlp(signal: str, protocol: str) -> Any:
    # Imported here: an exporter package that is missing costs one signal,
    # not the process.
    if protocol == HTTP_PROTOBUF:
        if signal == "traces":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter,
            )

            return OTLPSpanExporter()
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter,
        )

        return OTLPMetricExporter()
    if signal == "traces":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        return GrpcSpanExporter()
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
        OTLPMetricExporter as GrpcMetricExporter,
    )

    return GrpcMetricExporter()


def _exporters(value: str | None, *, otlp_configured: bool) -> tuple[str, ...]:
    if value is None or not value.strip():
        return ("otlp",) if otlp_configured else ()
    names = tuple(
        dict.fromkeys(n.strip().lower() for n in value.split(",") if n.strip())
    )
    return tuple(n for n in names if n != "none")


def _protocol(value: str | None) -> str:
    if not value:
        return GRPC
    value = value.strip().lower()
    if value in (GRPC, HTTP_PROTOBUF):
        return value
    log.warning("unsupported OTLP protocol; using grpc", extra={"protocol": value})
    return GRPC


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value <= 0:
        log.warning(
            "bad telemetry setting; using the default",
            extra={"variable": name, "value": raw, "default": default},
        )
        return default
    return value
