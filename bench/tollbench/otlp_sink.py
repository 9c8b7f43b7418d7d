"""A stand-in OpenTelemetry collector: accepts OTLP/gRPC and drops it.

With it Tollgate runs with telemetry exported (the batch span processor and
the periodic metric reader do their real work: serialise, send, wait for
the answer) without a real collector on this machine. Every export is
answered at once; the running totals go to stdout as one line per export,
``spans=N metric_exports=M``, which ``bench/run`` reads from the log.

    python -m tollbench.otlp_sink --port PORT
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)


class Totals:
    def __init__(self) -> None:
        self.spans = 0
        self.metric_exports = 0
        self._lock = threading.Lock()

    def add(self, *, spans: int = 0, metric_exports: int = 0) -> None:
        with self._lock:
            self.spans += spans
            self.metric_exports += metric_exports
            line = f"spans={self.spans} metric_exports={self.metric_exports}\n"
        sys.stdout.write(line)
        sys.stdout.flush()


class TraceSink(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, totals: Totals) -> None:
        self._totals = totals

    def Export(
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.ServicerContext,
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        spans = sum(
            len(scope.spans)
            for resource in request.resource_spans
            for scope in resource.scope_spans
        )
        self._totals.add(spans=spans)
        return trace_service_pb2.ExportTraceServiceResponse()


class MetricsSink(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, totals: Totals) -> None:
        self._totals = totals

    def Export(
        self,
        request: metrics_service_pb2.ExportMetricsServiceRequest,
        context: grpc.ServicerContext,
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        self._totals.add(metric_exports=1)
        return metrics_service_pb2.ExportMetricsServiceResponse()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    totals = Totals()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceSink(totals), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(
        MetricsSink(totals), server
    )
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()

    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    stopping.wait()
    server.stop(1)


def totals_from_log(text: str) -> tuple[int, int]:
    """(spans, metric exports) from the last totals line of the sink's log."""
    for line in reversed(text.splitlines()):
        if line.startswith("spans="):
            spans, exports = (int(part.split("=")[1]) for part in line.split())
            return spans, exports
    return 0, 0


if __name__ == "__main__":
    main()
