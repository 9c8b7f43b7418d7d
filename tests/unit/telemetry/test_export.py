"""Export is configured by the standard OTEL_* variables, off by default, and
a bad setting never stops the gateway."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetricExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)

from extproc.metering.usage import Usage
from extproc.telemetry import CallRecord, Telemetry
from extproc.telemetry._export import ExportConfig, metric_readers, span_processors

RECORD = CallRecord(
    request_id="r1",
    identity="alice",
    team="",
    project="",
    tool="",
    provider="openai",
    provider_family="openai",
    operation="chat",
    request_model="gpt-4o",
    response_model="gpt-4o",
    usage=Usage(10, 5),
    cost_micro_usd=100,
    outcome="metered",
    estimated=False,
    decision="allowed",
    scope=None,
    status=200,
    finish_reasons=("stop",),
    price_source=None,
)


@pytest.fixture(autouse=True)
def _clean_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


def test_nothing_is_exported_when_no_otel_variable_is_set() -> None:
    config = ExportConfig.from_environ({})

    assert ((), (), None) == (
        config.traces_exporters,
        config.metrics_exporters,
        config.prometheus_port,
    )


def test_an_otlp_endpoint_turns_on_otlp_over_grpc_for_both_signals() -> None:
    config = ExportConfig.from_environ(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}
    )

    assert (("otlp",), ("otlp",), "grpc") == (
        config.traces_exporters,
        config.metrics_exporters,
        config.traces_protocol,
    )


def test_a_traces_endpoint_turns_on_traces_only() -> None:
    config = ExportConfig.from_environ(
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318"}
    )

    assert (("otlp",), ()) == (config.traces_exporters, config.metrics_exporters)


def test_exporter_none_wins_over_an_endpoint() -> None:
    config = ExportConfig.from_environ(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
            "OTEL_TRACES_EXPORTER": "none",
        }
    )

    assert () == config.traces_exporters


def test_signal_protocol_overrides_the_shared_one() -> None:
    config = ExportConfig.from_environ(
        {
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
        }
    )

    assert ("grpc", "http/protobuf") == (
        config.traces_protocol,
        config.metrics_protocol,
    )


def test_http_protocol_builds_http_exporters() -> None:
    config = ExportConfig.from_environ(
        {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        }
    )

    [processor] = span_processors(config)
    [reader] = metric_readers(config)
    try:
        assert (True, True) == (
            isinstance(processor.span_exporter, HttpSpanExporter),
            isinstance(reader._exporter, HttpMetricExporter),
        )
    finally:
        processor.shutdown()
        reader.shutdown()


def test_grpc_protocol_builds_a_grpc_span_exporter() -> None:
    config = ExportConfig.from_environ({"OTEL_TRACES_EXPORTER": "otlp"})

    [processor] = span_processors(config)
    try:
        assert isinstance(processor.span_exporter, GrpcSpanExporter)
    finally:
        processor.shutdown()


def test_prometheus_in_metrics_exporter_takes_the_standard_port() -> None:
    config = ExportConfig.from_environ({"OTEL_METRICS_EXPORTER": "prometheus"})

    assert (9464, ()) == (config.prometheus_port, config.metrics_exporters)


def test_spans_are_exported_in_small_batches_unless_told_otherwise() -> None:
    default = ExportConfig.from_environ({})
    told = ExportConfig.from_environ({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "512"})

    assert (128, 512) == (default.span_batch_size, told.span_batch_size)


def test_the_span_processor_uses_the_configured_batch_size() -> None:
    config = ExportConfig(traces_exporters=("console",), span_batch_size=64)

    [processor] = span_processors(config)

    assert 64 == processor._batch_processor._max_export_batch_size
    processor.shutdown()


def test_bad_values_fall_back_to_defaults() -> None:
    config = ExportConfig.from_environ(
        {
            "OTEL_METRIC_EXPORT_INTERVAL": "soon",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon",
        }
    )

    assert (60_000, "grpc") == (config.export_interval_ms, config.traces_protocol)


def test_from_environment_with_unknown_exporters_still_records(monkeypatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin-from-1999")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "bogus")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "-5")

    telemetry = Telemetry.from_environment()
    telemetry.start_call(traceparent=None).finish(RECORD)

    assert None is telemetry.shutdown()


def test_sdk_disabled_gives_a_telemetry_that_does_nothing(monkeypatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")

    telemetry = Telemetry.from_environment()
    telemetry.start_call(traceparent=None).finish(RECORD)

    assert None is telemetry.shutdown()


def test_prometheus_endpoint_serves_the_metrics(monkeypatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1")
    port = _free_port()
    telemetry = Telemetry.from_environment(prometheus_port=port)
    try:
        telemetry.start_call(traceparent=None).finish(RECORD)
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/metrics", timeout=5
        ) as reply:
            text = reply.read().decode()
    finally:
        telemetry.shutdown()

    assert (True, True) == (
        "tollgate_requests_total{" in text,
        "gen_ai_client_token_usage_bucket{" in text,
    )


def test_prometheus_port_in_use_is_logged_and_left_out() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = ExportConfig(prometheus_host="127.0.0.1", prometheus_port=port)

        telemetry = Telemetry._from_config(config, "tollgate", 10)

    telemetry.start_call(traceparent=None).finish(RECORD)
    telemetry.shutdown()
    assert None is telemetry._prometheus


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_shutdown_with_an_unreachable_collector_gives_up_after_its_timeout(
    monkeypatch, caplog
) -> None:
    dead = f"http://127.0.0.1:{_free_port()}"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", dead)
    # Long enough that the exporter is still backing off when shutdown gives
    # up at 0.5 s (its first wait is about 1 s), short enough that it stops
    # trying seconds later rather than at interpreter exit.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "3")
    telemetry = Telemetry.from_environment()
    telemetry.start_call(traceparent=None).finish(RECORD)

    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="extproc.telemetry"):
        telemetry.shutdown(timeout_s=0.5)

    assert (True, ["telemetry exporters did not stop in time"]) == (
        time.monotonic() - started < 2.0,
        [r.getMessage() for r in caplog.records if r.name.startswith("extproc")],
    )


_EXIT_SCRIPT = """
import sys
from extproc.telemetry import Telemetry
from extproc.telemetry._telemetry import SHUTDOWN_TIMEOUT_S
from tests.unit.telemetry.test_export import RECORD

telemetry = Telemetry.from_environment()
telemetry.start_call(traceparent=None).finish(RECORD)
if sys.argv[1] == "shutdown":
    telemetry.shutdown()
print(SHUTDOWN_TIMEOUT_S)
"""


def test_process_exit_with_an_unreachable_collector_waits_only_the_shutdown_bound(
    tmp_path,
) -> None:
    # The SDK's own exit hooks waited for the exporter's retries: 21 s after
    # an explicit shutdown, 35 s without one, and warned that shutdown can
    # only be called once. Both ways out now take the one bounded shutdown.
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{_free_port()}",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "30",
        "PYTHONPATH": str(Path(__file__).parents[3]),
    }
    started = time.monotonic()
    exits = {
        mode: subprocess.Popen(
            [sys.executable, "-c", _EXIT_SCRIPT, mode],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for mode in ("shutdown", "exit")
    }
    outputs = {mode: process.communicate(timeout=60) for mode, process in exits.items()}
    elapsed = time.monotonic() - started
    bound = float(outputs["exit"][0])

    assert ([0, 0], [False, False], True) == (
        [process.returncode for process in exits.values()],
        ["can only be called once" in err for _, err in outputs.values()],
        elapsed < bound + 4.0,
    ), outputs
