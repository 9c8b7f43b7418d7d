"""Tollgate's span joins the trace Envoy started, through a real collector port."""

from __future__ import annotations

import secrets
import threading
import time
from concurrent import futures

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)

from extproc.local import free_port
from tests.e2e.conftest import running_gateway
from tests.e2e.harness import REPLAY_HEADER

pytestmark = pytest.mark.e2e


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, object]] = []
        self._lock = threading.Lock()

    def Export(self, request, context):  # noqa: N802 (gRPC method name)
        with self._lock:
            for resource_spans in request.resource_spans:
                service = next(
                    (
                        a.value.string_value
                        for a in resource_spans.resource.attributes
                        if a.key == "service.name"
                    ),
                    "",
                )
                for scope_spans in resource_spans.scope_spans:
                    self.spans += [(service, span) for span in scope_spans.spans]
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def collector():
    port = free_port()
    receiver = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    yield receiver, port
    server.stop(0)


def test_tollgate_span_is_a_child_in_envoys_trace(collector, redis_server, tmp_path):
    receiver, port = collector
    env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    with running_gateway(
        tmp_path,
        redis_server,
        tenant="tr-" + secrets.token_hex(3),
        env=env,
        collector=f"127.0.0.1:{port}",
    ) as gateway:
        gateway.client.post(
            "/openai/v1/chat/completions",
            {"model": "gpt-4o", "messages": []},
            {
                "x-tollgate-identity": "tracer",
                REPLAY_HEADER: "openai_chat_nonstream_cache_read",
            },
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            services = {service for service, _ in receiver.spans}
            if {"tollgate", "tollgate-envoy"} <= services:
                break
            time.sleep(0.2)

    ours = [span for service, span in receiver.spans if service == "tollgate"]
    envoys = [span for service, span in receiver.spans if service == "tollgate-envoy"]
    assert ours and envoys
    span = ours[0]
    assert span.name.startswith("chat ")
    assert span.trace_id in {e.trace_id for e in envoys}
    assert span.parent_span_id in {e.span_id for e in envoys}
    attributes = {a.key: a.value for a in span.attributes}
    assert "tracer" == attributes["tollgate.identity"].string_value
    assert attributes["tollgate.cost_micro_usd"].int_value > 0
