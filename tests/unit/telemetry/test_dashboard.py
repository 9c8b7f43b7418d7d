"""The Grafana dashboard queries only metric and label names that the
Prometheus exposition of Tollgate's metrics really has."""

from __future__ import annotations

import json
import re
from pathlib import Path

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, generate_latest

from extproc.metering.usage import Usage
from extproc.telemetry import CallRecord, Telemetry

DASHBOARD = (
    Path(__file__).resolve().parents[3] / "k8s" / "grafana" / "tollgate-dashboard.json"
)
RECORD = CallRecord(
    request_id="r1", identity="alice", team="platform", project="gateway",
    tool="sdk", provider="openai", provider_family="openai", operation="chat",
    request_model="gpt-4o", response_model="gpt-4o", usage=Usage(10, 5),
    cost_micro_usd=100, outcome="metered", estimated=False, decision="allowed",
    scope=None, status=200, finish_reasons=("stop",), price_source=None,
)  # fmt: skip


def _exposition() -> str:
    registry = CollectorRegistry()
    telemetry = Telemetry(
        tracer_provider=TracerProvider(shutdown_on_exit=False),
        meter_provider=MeterProvider(
            metric_readers=[PrometheusMetricReader(registry=registry)],
            shutdown_on_exit=False,
        ),
    )
    call = telemetry.start_call(traceparent=None)
    with call.phase("request_headers"):
        pass
    call.finish(RECORD)
    telemetry.record_budget_level("user:alice", 1)
    telemetry.record_redis_error("settle")
    telemetry.set_journal_depth_source(lambda: 0)
    return generate_latest(registry).decode()


def _queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    queries += [
        v["definition"] for v in dashboard["templating"]["list"] if "definition" in v
    ]
    return queries


def test_every_name_the_dashboard_queries_is_exposed() -> None:
    exposition = _exposition()
    metrics = set(re.findall(r"^([a-zA-Z_:][\w:]*)[{ ]", exposition, re.MULTILINE))
    labels = set(re.findall(r"[{,](\w+)=", exposition))

    used = {
        name for q in _queries() for name in re.findall(r"\b(?:tollgate|gen_ai)_\w+", q)
    }
    assert set() == used - metrics - labels


def test_the_dashboard_queries_every_tollgate_metric() -> None:
    exposition = _exposition()
    families = set(re.findall(r"^# TYPE ((?:tollgate|gen_ai)_\w+) ", exposition, re.M))

    queried = " ".join(_queries())
    assert set() == {f for f in families if f not in queried}
