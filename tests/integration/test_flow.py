"""One call through the real stream handler and Redis: what it is charged."""

from __future__ import annotations

import base64
import json
import textwrap
from pathlib import Path

from tests.integration.flow import request, response, run_call
from tests.provider_fixtures import FIXTURES

EMBED = "/gemini/v1beta/models/text-embedding-004:embedContent"
CHAT = "/openai/v1/chat/completions"
STREAM_REQUEST = b'{"model":"gpt-4o-mini","stream":true,"messages":[]}'


def _policy(extra_providers: str = "") -> str:
    return (
        textwrap.dedent("""
        providers:
          gemini: {family: gemini, route_prefix: /gemini}
          openai: {family: openai, route_prefix: /openai}
    """)
        + textwrap.indent(textwrap.dedent(extra_providers), "  ")
        + textwrap.dedent("""
        users:
          default: {budget: {capacity_usd: "5"}}
    """)
    )


def test_refusal_after_admission_releases_the_reservation(redis_server, tmp_path):
    secret_file = tmp_path / "aws"
    secret_file.write_text("not-an-aws-key-pair")
    bedrock = f"""
        bedrock:
          family: bedrock
          route_prefix: /bedrock
          upstream_host: bedrock-runtime.us-east-1.amazonaws.com
          credential: {{file: {secret_file}}}
    """
    body = b'{"messages":[{"role":"user","content":[{"text":"hi"}]}]}'

    outcome = run_call(
        redis_server.url,
        _policy(bedrock),
        request("/bedrock/model/amazon.nova-pro-v1%3A0/converse", body),
        tmp_path / "journal.jsonl",
    )

    assert 503 == outcome.answers[-1].immediate_response.status.code
    assert (5_000_000, [], 0) == (outcome.level, outcome.ledger, outcome.leases)


def test_embeddings_without_usage_are_estimated_with_no_output(
    redis_server, tmp_path: Path
) -> None:
    vector = b"[" + b",".join(b"0.0123456" for _ in range(3072)) + b"]"
    messages = request(EMBED, b'{"content":{"parts":[{"text":"hello"}]}}')
    messages += response(b'{"embedding":{"values":' + vector + b"}}")

    outcome = run_call(
        redis_server.url, _policy(), messages, tmp_path / "journal.jsonl"
    )

    [entry] = outcome.ledger
    assert ("estimated_no_usage", 0) == (
        entry["outcome"],
        entry["detail"]["usage"]["output_tokens"],
    )
    assert entry["detail"]["usage"]["input_tokens"] > 0


def test_a_usage_the_pricing_library_refuses_is_still_charged(
    redis_server, tmp_path: Path
) -> None:
    # More cached tokens than prompt tokens: genai-prices raises on these.
    answer = (
        b'{"id":"x","object":"chat.completion","model":"gpt-4o","choices":[],'
        b'"usage":{"prompt_tokens":10,"completion_tokens":5,'
        b'"prompt_tokens_details":{"cached_tokens":900}}}'
    )
    messages = request(CHAT, b'{"model":"gpt-4o","max_tokens":5,"messages":[]}')
    messages += response(answer)

    outcome = run_call(
        redis_server.url, _policy(), messages, tmp_path / "journal.jsonl"
    )

    [entry] = outcome.ledger
    assert "metered" == entry["outcome"]
    assert 900 == entry["detail"]["usage"]["input_tokens"]
    assert entry["cost_micro_usd"] > 0


def test_a_background_response_is_refused_before_anything_is_reserved(
    redis_server, tmp_path: Path
) -> None:
    body = b'{"model":"o3-pro","input":"hi","background":true}'

    outcome = run_call(
        redis_server.url,
        _policy(),
        request("/openai/v1/responses", body),
        tmp_path / "journal.jsonl",
    )

    assert 403 == outcome.answers[-1].immediate_response.status.code
    # The refusal comes before admission: no bucket was even created.
    assert (None, [], 0) == (outcome.level, outcome.ledger, outcome.leases)


def test_a_refusal_names_its_reason_in_a_header_whatever_the_error_shape(
    redis_server, tmp_path: Path
) -> None:
    anthropic = "anthropic: {family: anthropic, route_prefix: /anthropic}"
    body = b'{"model":"claude-sonnet-4-5","max_tokens":100000000,"messages":[]}'

    outcome = run_call(
        redis_server.url,
        _policy(anthropic),
        request("/anthropic/v1/messages", body),
        tmp_path / "journal.jsonl",
    )

    reply = outcome.answers[-1].immediate_response
    headers = {h.header.key: h.header.raw_value for h in reply.headers.set_headers}
    assert (429, b"budget_exceeded") == (
        reply.status.code,
        headers["x-tollgate-refusal"],
    )


def test_a_host_naming_another_provider_than_the_path_is_refused_unreserved(
    redis_server, tmp_path: Path
) -> None:
    # Envoy may route by Host; the prefix's credential must never ride along
    # to the provider the Host names.
    hosts = """
        anthropic: {family: anthropic, route_prefix: /anthropic,
                    hosts: [api.anthropic.com]}
    """
    body = b'{"model":"gpt-4o-mini","max_tokens":16,"messages":[]}'

    outcome = run_call(
        redis_server.url,
        _policy(hosts),
        request(CHAT, body, authority="API.Anthropic.com:443"),
        tmp_path / "journal.jsonl",
    )

    [answer] = outcome.answers
    reply = answer.immediate_response
    headers = {h.header.key: h.header.raw_value for h in reply.headers.set_headers}
    assert (400, b"route_conflict", None, []) == (
        reply.status.code,
        headers["x-tollgate-refusal"],
        outcome.level,
        outcome.ledger,
    )


def _charged(url: str, messages, tmp_path: Path) -> tuple[str, int, int]:
    """The outcome, input and output tokens of the call's one ledger entry."""
    outcome = run_call(url, _policy(), messages, tmp_path / "journal.jsonl")
    [entry] = outcome.ledger
    usage = entry["detail"]["usage"]
    return entry["outcome"], usage["input_tokens"], usage["output_tokens"]


def test_stream_cut_after_its_role_only_chunk_is_charged_its_prompt_only(
    redis_server, tmp_path: Path
) -> None:
    body = (FIXTURES / "openai_chat_stream_include_usage.sse").read_bytes()
    first_event = body[: body.index(b"\n\n") + 2]
    messages = request(CHAT, STREAM_REQUEST)
    messages += response(first_event, "text/event-stream", end=False)

    charged = _charged(redis_server.url, messages, tmp_path)

    prompt = -(-len(STREAM_REQUEST) // 4)
    assert ("estimated_cut", prompt, 0) == charged


def test_stream_cut_before_its_answer_is_charged_its_prompt_only(
    redis_server, tmp_path: Path
) -> None:
    charged = _charged(redis_server.url, request(CHAT, STREAM_REQUEST), tmp_path)

    prompt = -(-len(STREAM_REQUEST) // 4)
    assert ("estimated_no_response", prompt, 0) == charged


def test_answer_cut_before_it_came_is_charged_its_output_cap(
    redis_server, tmp_path: Path
) -> None:
    body = b'{"model":"gpt-4o-mini","max_tokens":300,"messages":[]}'

    charged = _charged(redis_server.url, request(CHAT, body), tmp_path)

    assert ("estimated_no_response", 300) == (charged[0], charged[2])


def test_a_large_inline_image_is_reserved_and_charged_as_an_image_not_as_text(
    redis_server, tmp_path: Path
) -> None:
    # 5 MB of base64 PNG: about 1.7 million tokens read as text (10 USD on
    # Claude Sonnet, past this 5 USD budget), some 1,600 as Anthropic bills it.
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(3_750_000)).decode()
    image = {"type": "image", "source": {"type": "base64", "data": png}}
    body = json.dumps(
        {
            "model": "claude-sonnet-4-5",
            "max_tokens": 1024,
            "messages": [{"role": "user", "content": [image]}],
        }
    ).encode()
    anthropic = "anthropic: {family: anthropic, route_prefix: /anthropic}"

    outcome = run_call(
        redis_server.url,
        _policy(anthropic),
        request("/anthropic/v1/messages", body),
        tmp_path / "journal.jsonl",
    )

    # Admitted, then charged as a call whose answer never came: its prompt
    # and the output cap.
    [entry] = outcome.ledger
    assert not outcome.answers[-1].HasField("immediate_response")
    assert ("estimated_no_response", 1024) == (
        entry["outcome"],
        entry["detail"]["usage"]["output_tokens"],
    )
    assert 4_000 < entry["detail"]["usage"]["input_tokens"] < 4_100


def test_a_call_asking_for_priority_is_reserved_and_estimated_at_priority_rates(
    redis_server, tmp_path: Path
) -> None:
    def charged(tier: str) -> int:
        body = json.dumps(
            {"model": "gpt-5", "max_completion_tokens": 10_000, "service_tier": tier}
        ).encode()
        outcome = run_call(
            redis_server.url,
            _policy(),
            request(CHAT, body),
            tmp_path / f"journal-{tier}.jsonl",
        )
        [entry] = outcome.ledger  # charged as unanswered: prompt and cap
        return entry["cost_micro_usd"]

    # OpenAI bills gpt-5's priority tier at twice its standard rates.
    assert 2 * charged("default") == charged("priority")
