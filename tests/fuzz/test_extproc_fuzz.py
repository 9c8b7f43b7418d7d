"""Fuzz target: the ext_proc stream handler under arbitrary message sequences.

Runs the real ``ExternalProcessor`` in-process against a real redis-server
with hypothesis-generated headers, bodies, statuses and chunkings. Whatever
arrives, every message gets an answer of its own kind (or the stream ends
with an immediate response), nothing escapes as an exception, and every
call that reserved is settled.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import textwrap
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extproc.budgets.journal import Journal
from extproc.budgets.store import BudgetStore
from extproc.credentials import CredentialReader
from extproc.policy import parse_policy
from extproc.server.runtime import Runtime
from extproc.server.stream import ExternalProcessor
from extproc.telemetry import Telemetry

POLICY = textwrap.dedent("""
    tenant: fuzz
    providers:
      openai: {family: openai, route_prefix: /openai}
      anthropic: {family: anthropic, route_prefix: /anthropic}
      gemini: {family: gemini, route_prefix: /gemini}
      bedrock: {family: bedrock, route_prefix: /bedrock}
    users:
      default: {budget: {capacity_usd: "5"}, rate_limits: {requests_per_minute: 100000}}
""")

PATHS = [
    "/openai/v1/chat/completions",
    "/openai/v1/responses",
    "/openai/v1/embeddings",
    "/anthropic/v1/messages",
    "/anthropic/v1/messages/count_tokens",
    "/gemini/v1beta/models/g:streamGenerateContent?alt=sse&key=k",
    "/bedrock/model/m/converse-stream",
    "/nowhere",
    "/openai/v1/models",
]
text = st.text(max_size=40)
header_values = st.one_of(
    text, st.sampled_from(["alice", "", " ", "a\x01b", "x" * 300])
)
bodies = st.one_of(
    st.binary(max_size=300),
    st.sampled_from(
        [
            b'{"model":"gpt-4o","max_tokens":5,"stream":true,"messages":[]}',
            b'{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[]}',
            b"[" * 5000,
            b"null",
            b'{"model":"\\u0000"}',
        ]
    ),
)


class _Context:
    def invocation_metadata(self):
        return ()


def _headers(pairs: list[tuple[str, str]], end: bool) -> pb.HttpHeaders:
    message = pb.HttpHeaders(end_of_stream=end)
    for key, value in pairs:
        message.headers.headers.append(
            base_pb2.HeaderValue(key=key, raw_value=value.encode("utf-8", "replace"))
        )
    return message


@st.composite
def exchanges(draw) -> list[pb.ProcessingRequest]:
    pairs = [
        (":method", draw(st.sampled_from(["POST", "GET", "DELETE", "PATCH"]))),
        (":path", draw(st.sampled_from(PATHS) | text)),
    ]
    for name in draw(
        st.lists(
            st.sampled_from(
                [
                    "x-tollgate-identity",
                    "authorization",
                    "x-api-key",
                    "user-agent",
                    "x-tollgate-tool",
                    "x-tollgate-attribution",
                    "traceparent",
                    "content-type",
                ]
            ),
            max_size=6,
        )
    ):
        pairs.append((name, draw(header_values)))
    body = draw(bodies)
    status = draw(st.sampled_from(["200", "429", "500", "abc", ""]))
    response_type = draw(
        st.sampled_from(
            [
                "application/json",
                "text/event-stream",
                "application/vnd.amazon.eventstream",
                "",
            ]
        )
    )
    encoding = draw(st.sampled_from(["", "gzip", "br", "zstd", "bogus"]))
    chunks = draw(st.lists(st.binary(max_size=80), max_size=5))
    messages = [
        pb.ProcessingRequest(request_headers=_headers(pairs, end=not body)),
        pb.ProcessingRequest(request_body=pb.HttpBody(body=body, end_of_stream=True)),
        pb.ProcessingRequest(
            response_headers=_headers(
                [
                    (":status", status),
                    ("content-type", response_type),
                    ("content-encoding", encoding),
                ],
                end=not chunks,
            )
        ),
    ]
    for index, chunk in enumerate(chunks):
        messages.append(
            pb.ProcessingRequest(
                response_body=pb.HttpBody(
                    body=chunk, end_of_stream=index == len(chunks) - 1
                )
            )
        )
    cut = draw(st.integers(min_value=1, max_value=len(messages)))
    return messages[:cut]


async def _run(
    processor: ExternalProcessor, messages: list[pb.ProcessingRequest]
) -> list:
    async def requests():
        for message in messages:
            yield message

    answers = [answer async for answer in processor.Process(requests(), _Context())]
    await processor.drain(5)
    return answers


@pytest.fixture(scope="module")
def processor_factory(redis_server, tmp_path_factory):
    journal_dir = tmp_path_factory.mktemp("journal")

    def make(client: aioredis.Redis) -> ExternalProcessor:
        policy = parse_policy(POLICY)
        store = BudgetStore(client, "fuzz-" + secrets.token_hex(3), lease_ms=60_000)
        runtime = Runtime(policy, CredentialReader(), store)
        journal = Journal(Path(journal_dir) / "journal.jsonl", max_bytes=1 << 20)
        return ExternalProcessor(lambda: runtime, journal, Telemetry.disabled())

    return make, redis_server.url


@given(messages=exchanges())
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_any_message_sequence_is_answered_without_escaping(processor_factory, messages):
    make, url = processor_factory

    async def scenario():
        client = aioredis.from_url(url)
        processor = None
        try:
            processor = make(client)
            return await _run(processor, messages), processor
        finally:
            await client.aclose()
            if processor is not None:
                # Every example opens the same journal file: a failing one
                # must not keep it locked from the next (shrinking) example.
                processor._journal.close()

    answers, processor = asyncio.run(scenario())

    assert answers, "the first message always gets an answer"
    for message, answer in zip(messages, answers):
        kind = answer.WhichOneof("response")
        if kind == "immediate_response":
            status = answer.immediate_response.status.code
            assert 400 <= status < 600
            assert json.loads(answer.immediate_response.body)
            assert answer is answers[-1]
        else:
            assert message.WhichOneof("request") == kind
    assert not processor._live, "a call was left unsettled"
