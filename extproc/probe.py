"""``python -m extproc.probe [ADDRESS]``: is the ext_proc server serving?

A Kubernetes exec probe for the tollgate container, whose server listens on a
Unix socket and so cannot be probed over TCP. Asks the standard gRPC health
service about the ext_proc service at ``ADDRESS`` (default: the server's own
``TOLLGATE_GRPC_LISTEN``) and exits 0 for SERVING, 1 for anything else,
including no answer within ``--timeout-s``.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from extproc.settings import Settings

EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"


def check(address: str, *, timeout_s: float) -> str:
    """The health status name of the ext_proc service at ``address``."""
    request = health_pb2.HealthCheckRequest(service=EXT_PROC_SERVICE)
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(request, timeout=timeout_s)
        except grpc.RpcError as error:
            return f"UNREACHABLE ({error.code().name})"

    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m extproc.probe", description=__doc__
    )
    parser.add_argument("address", nargs="?", help="host:port or unix:/path")
    parser.add_argument("--timeout-s", type=float, default=3.0)
    args = parser.parse_args(argv)
    address = args.address or Settings().grpc_listen

    status = check(address, timeout_s=args.timeout_s)

    print(
        f"{address}: {status}", file=sys.stdout if status == "SERVING" else sys.stderr
    )
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
