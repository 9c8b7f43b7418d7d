"""Drive the real ext_proc stream handler in-process against real Redis.

``run_call`` feeds one call's Envoy messages to an ``ExternalProcessor``
built from a policy text, waits for its settlement, and returns the answers
with what Redis then holds for the caller.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass
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


class _Context:
    def invocation_metadata(self):
        return ()


@dataclass
class Outcome:
    answers: list[pb.ProcessingResponse]
    level: int | None  # the level of the bucket ``user:IDENTITY``
    ledger: list[dict]  # entries, with their detail parsed
    leases: int


def headers(pairs: dict[str, str], *, end: bool = False) -> pb.HttpHeaders:
    message = pb.HttpHeaders(end_of_stream=end)
    for key, value in pairs.items():
        message.headers.headers.append(
            base_pb2.HeaderValue(key=key, raw_value=value.encode())
        )
    return message


def request(
    path: str, body: bytes, identity: str = "alice", authority: str = "gateway"
) -> list[pb.ProcessingRequest]:
    pairs = {
        ":method": "POST",
        ":path": path,
        ":authority": authority,
        "content-type": "application/json",
        "x-tollgate-identity": identity,
    }
    return [
        pb.ProcessingRequest(request_headers=headers(pairs)),
        pb.ProcessingRequest(request_body=pb.HttpBody(body=body, end_of_stream=True)),
    ]


def response(
    body: bytes,
    content_type: str = "application/json",
    status: str = "200",
    *,
    end: bool = True,
):
    """The response's messages; with ``end=False`` the body is cut after
    ``body``, as when the client hangs up."""
    pairs = {":status": status, "content-type": content_type}
    return [
        pb.ProcessingRequest(response_headers=headers(pairs)),
        pb.ProcessingRequest(response_body=pb.HttpBody(body=body, end_of_stream=end)),
    ]


def run_call(
    url: str,
    policy_text: str,
    messages: list[pb.ProcessingRequest],
    journal_path: Path,
    identity: str = "alice",
) -> Outcome:
    return asyncio.run(_run(url, policy_text, messages, journal_path, identity))


async def _run(url, policy_text, messages, journal_path, identity) -> Outcome:
    client = aioredis.from_url(url)
    try:
        store = BudgetStore(client, "flow-" + secrets.token_hex(3), lease_ms=60_000)
        runtime = Runtime(parse_policy(policy_text), CredentialReader(), store)
        journal = Journal(journal_path, max_bytes=1 << 20)
        processor = ExternalProcessor(lambda: runtime, journal, Telemetry.disabled())

        async def stream():
            for message in messages:
                yield message

        answers = [a async for a in processor.Process(stream(), _Context())]
        await processor.drain(5)
        level = await client.hget(store.keys.bucket(f"user:{identity}"), "level")
        entries = await client.xrange(store.keys.ledger)
        return Outcome(
            answers=answers,
            level=None if level is None else int(level),
            ledger=[_entry(fields) for _, fields in entries],
            leases=await client.zcard(store.keys.leases),
        )
    finally:
        await client.aclose()


def _entry(fields: dict[bytes, bytes]) -> dict:
    entry = {k.decode(): v.decode() for k, v in fields.items()}
    entry["detail"] = json.loads(entry.get("detail", "{}"))
    entry["cost_micro_usd"] = int(entry["cost_micro_usd"])
    return entry
