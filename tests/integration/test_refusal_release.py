"""A call the gateway refuses after reserving gives the reservation back.

The real stream handler runs in-process against a real redis-server; the
refusal comes after admission (a Bedrock secret that cannot sign), so the
call never reaches a provider and must cost nothing.
"""

from __future__ import annotations

import asyncio
import secrets
import textwrap
from pathlib import Path

import redis.asyncio as aioredis
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from extproc.budgets.journal import Journal
from extproc.budgets.store import BudgetStore
from extproc.credentials import CredentialReader
from extproc.policy import parse_policy
from extproc.server.runtime import Runtime
from extproc.server.stream import ExternalProcessor
from extproc.telemetry import Telemetry

BODY = b'{"messages":[{"role":"user","content":[{"text":"hi"}]}]}'


class _Context:
    def invocation_metadata(self):
        return ()


def _policy(secret_file: Path) -> str:
    return textwrap.dedent(f"""
        providers:
          bedrock:
            family: bedrock
            route_prefix: /bedrock
            upstream_host: bedrock-runtime.us-east-1.amazonaws.com
            credential: {{file: {secret_file}}}
        users:
          default: {{budget: {{capacity_usd: "5"}}}}
    """)


def _messages() -> list[pb.ProcessingRequest]:
    headers = pb.HttpHeaders(end_of_stream=False)
    for key, value in (
        (":method", "POST"),
        (":path", "/bedrock/model/amazon.nova-pro-v1%3A0/converse"),
        (":authority", "gateway"),
        ("content-type", "application/json"),
        ("x-tollgate-identity", "alice"),
    ):
        headers.headers.headers.append(
            base_pb2.HeaderValue(key=key, raw_value=value.encode())
        )
    return [
        pb.ProcessingRequest(request_headers=headers),
        pb.ProcessingRequest(request_body=pb.HttpBody(body=BODY, end_of_stream=True)),
    ]


async def _process(url: str, policy_text: str, journal_path: Path):
    client = aioredis.from_url(url)
    try:
        store = BudgetStore(client, "release-" + secrets.token_hex(3), lease_ms=60_000)
        runtime = Runtime(parse_policy(policy_text), CredentialReader(), store)
        journal = Journal(journal_path, max_bytes=1 << 20)
        processor = ExternalProcessor(lambda: runtime, journal, Telemetry.disabled())

        async def requests():
            for message in _messages():
                yield message

        answers = [a async for a in processor.Process(requests(), _Context())]
        await processor.drain(5)
        level = await client.hget(store.keys.bucket("user:alice"), "level")
        ledger = await client.xlen(store.keys.ledger)
        held = await client.zcard(store.keys.leases)
        return answers, int(level), ledger, held
    finally:
        await client.aclose()


def test_refusal_after_admission_releases_the_reservation(redis_server, tmp_path):
    secret_file = tmp_path / "aws"
    secret_file.write_text("not-an-aws-key-pair")

    answers, level, ledger, held = asyncio.run(
        _process(redis_server.url, _policy(secret_file), tmp_path / "journal.jsonl")
    )

    assert 503 == answers[-1].immediate_response.status.code
    assert (5_000_000, 0, 0) == (level, ledger, held)
