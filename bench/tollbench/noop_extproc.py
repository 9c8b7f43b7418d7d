"""An ext_proc server that exchanges Tollgate's messages and decides nothing.

The same server model as Tollgate (``grpc.aio``, one asyncio loop, the same
channel options, the gRPC health service) and the same message pattern as
``envoy/local.yaml``'s processing mode: request headers, the buffered request
body, response headers and every streamed response body chunk, each
answered with an empty response of its kind. Like Tollgate, it ends the
stream itself at the response's end of stream rather than waiting for
Envoy to cancel it. What it costs is the price of the protocol itself.

For the split setup (a gate filter plus a metering filter in observability
mode) it answers nothing on the observability-mode stream.

    python -m tollbench.noop_extproc --listen 127.0.0.1:PORT
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import AsyncIterator

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

try:
    # The channel options Tollgate serves with, so that both servers differ
    # only in what they do per message.
    from extproc.server.app import _GRPC_OPTIONS as GRPC_OPTIONS
except ImportError:  # renamed upstream: keep the values of the time of writing
    GRPC_OPTIONS = [
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ("grpc.so_reuseport", 1),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 0),
    ]

SERVICE_NAME = "envoy.service.ext_proc.v3.ExternalProcessor"

# Built once: an empty answer changes nothing, whatever the message.
_EMPTY = {
    "request_headers": pb.ProcessingResponse(request_headers=pb.HeadersResponse()),
    "response_headers": pb.ProcessingResponse(response_headers=pb.HeadersResponse()),
    "request_body": pb.ProcessingResponse(request_body=pb.BodyResponse()),
    "response_body": pb.ProcessingResponse(response_body=pb.BodyResponse()),
    "request_trailers": pb.ProcessingResponse(request_trailers=pb.TrailersResponse()),
    "response_trailers": pb.ProcessingResponse(response_trailers=pb.TrailersResponse()),
}


class NoopProcessor(pb_grpc.ExternalProcessorServicer):
    """Answers every message empty; ends the stream after the response."""

    async def Process(
        self,
        request_iterator: AsyncIterator[pb.ProcessingRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.ProcessingResponse]:
        async for message in request_iterator:
            kind = message.WhichOneof("request")
            # In observability mode Envoy does not wait for answers and
            # drops them; sending none is what a metering filter would do.
            if not message.observability_mode:
                yield _EMPTY[kind]
            if _ends_response(message, kind):
                break


def _ends_response(message: pb.ProcessingRequest, kind: str) -> bool:
    if kind == "response_body":
        return message.response_body.end_of_stream
    if kind == "response_headers":
        return message.response_headers.end_of_stream
    return kind == "response_trailers"


async def serve(listen: str) -> None:
    server = grpc.aio.server(options=GRPC_OPTIONS)
    pb_grpc.add_ExternalProcessorServicer_to_server(NoopProcessor(), server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    server.add_insecure_port(listen)
    await server.start()
    for service in ("", SERVICE_NAME):
        await health.set(service, health_pb2.HealthCheckResponse.SERVING)

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()

    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="host:port to serve on")
    args = parser.parse_args()
    asyncio.run(serve(args.listen))


if __name__ == "__main__":
    main()
