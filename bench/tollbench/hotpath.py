"""Tollgate's own CPU per call, without Envoy, gRPC or a load generator.

Feeds the benchmark's JSON call (request headers, buffered request body,
response headers, response body) straight into ``ExternalProcessor.Process``
from many concurrent coroutines, against a throw-away ``redis-server``, and
reports the process CPU time per call. gRPC's own share is left out, so the
figure is what Tollgate's code adds on top of the protocol; because it counts
CPU rather than wall time it holds steady while other work shares the
machine, which makes it the figure to watch while tuning.

    bench/run --hotpath [--hotpath-calls N] [--telemetry off] [--profile]
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from extproc.budgets.clients import AsyncClient, open_async_client
from extproc.budgets.journal import Journal
from extproc.budgets.store import BudgetStore
from extproc.credentials import CredentialReader
from extproc.local import RedisProcess, free_port
from extproc.policy import parse_policy
from extproc.server.runtime import Runtime
from extproc.server.stream import ExternalProcessor
from extproc.telemetry import Telemetry
from tollbench import payloads, topology
from tollbench.children import Child

CONCURRENCY = 16


@dataclass(frozen=True)
class HotpathResult:
    calls: int
    cpu_us_per_call: float
    wall_s: float
    telemetry: bool


class _Context:
    """What the servicer reads of a gRPC context: no trace metadata."""

    def invocation_metadata(self) -> tuple[()]:
        return ()


def call_messages(identity: str) -> list[pb.ProcessingRequest]:
    """The four messages Envoy sends for one JSON call of the benchmark."""
    request = {
        ":method": "POST",
        ":path": payloads.PATH,
        ":authority": "gateway",
        **payloads.request_headers(identity, stream=False),
    }
    response = {":status": "200", "content-type": "application/json"}
    return [
        pb.ProcessingRequest(request_headers=_headers(request)),
        pb.ProcessingRequest(
            request_body=pb.HttpBody(
                body=payloads.request_body(stream=False), end_of_stream=True
            )
        ),
        pb.ProcessingRequest(response_headers=_headers(response)),
        pb.ProcessingRequest(
            response_body=pb.HttpBody(
                body=payloads.completion_body(), end_of_stream=True
            )
        ),
    ]


def run(calls: int, *, telemetry: bool, workdir: Path | None = None) -> HotpathResult:
    """Run ``calls`` calls, ``CONCURRENCY`` at a time; CPU per call."""
    with tempfile.TemporaryDirectory() as scratch:
        root = workdir or Path(scratch)
        with RedisProcess(workdir=root / "redis") as redis_process:
            if not telemetry:
                return asyncio.run(_run(redis_process.url, root, calls, None))
            port = free_port()
            with Child(
                "otlp_sink",
                ["--port", str(port)],
                port=port,
                log_path=root / "otlp_sink.log",
            ):
                return asyncio.run(_run(redis_process.url, root, calls, port))


async def _run(
    url: str, root: Path, calls: int, sink_port: int | None
) -> HotpathResult:
    processor, client, telemetry = await _processor(url, root, sink_port)
    messages = {i: call_messages(i) for i in payloads.IDENTITIES}
    queue = [payloads.IDENTITIES[n % len(payloads.IDENTITIES)] for n in range(calls)]

    async def one(identity: str) -> None:
        async def stream():
            for message in messages[identity]:
                yield message

        async for _ in processor.Process(stream(), _Context()):
            pass

    async def worker(batch: list[str]) -> None:
        for identity in batch:
            await one(identity)

    await worker(queue[:CONCURRENCY])  # warm: scripts loaded, prices resolved
    await processor.drain(5)
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(queue[w::CONCURRENCY]) for w in range(CONCURRENCY)))
    await processor.drain(30)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall

    telemetry.shutdown()
    await client.aclose()
    return HotpathResult(calls, cpu * 1e6 / calls, wall, sink_port is not None)


async def _processor(
    url: str, root: Path, sink_port: int | None
) -> tuple[ExternalProcessor, AsyncClient, Telemetry]:
    os.environ[payloads.GATEWAY_CREDENTIAL_ENV] = payloads.GATEWAY_CREDENTIAL
    if sink_port is None:
        telemetry = Telemetry.disabled()
    else:
        os.environ.update(topology.otlp_environment(sink_port))
        telemetry = Telemetry.from_environment()
    client = await open_async_client(url, timeout_ms=5_000)
    store = BudgetStore(client, topology.TENANT, lease_ms=900_000)
    policy = parse_policy(topology.policy_text())
    runtime = Runtime(policy, CredentialReader(), store)
    journal = Journal(root / "journal.jsonl", max_bytes=1 << 20)
    return ExternalProcessor(lambda: runtime, journal, telemetry), client, telemetry


def _headers(pairs: dict[str, str]) -> pb.HttpHeaders:
    message = pb.HttpHeaders()
    for key, value in pairs.items():
        message.headers.headers.append(
            base_pb2.HeaderValue(key=key, raw_value=value.encode())
        )
    return message
