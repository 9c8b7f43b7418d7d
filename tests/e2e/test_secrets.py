"""No credential, the gateway's or a client's, in any log line, span or metric."""

from __future__ import annotations

import secrets
import time

import pytest

from tests.e2e.conftest import running_gateway
from tests.e2e.harness import REPLAY_HEADER

pytestmark = pytest.mark.e2e

CLIENT_SECRETS = {
    "authorization": "Bearer sk-client-" + secrets.token_hex(12),
    "x-api-key": "sk-ant-client-" + secrets.token_hex(12),
    "api-key": "azure-client-" + secrets.token_hex(12),
    "x-goog-api-key": "AIza-client-" + secrets.token_hex(12),
    "proxy-authorization": "Basic " + secrets.token_hex(12),
}
WORKLOAD = [
    (
        "/openai/v1/chat/completions",
        "openai_chat_nonstream_cache_read",
        {"model": "gpt-4o", "messages": []},
    ),
    (
        "/openai/v1/chat/completions",
        "openai_chat_stream_include_usage",
        {"model": "gpt-4o-mini", "stream": True, "messages": []},
    ),
    (
        "/openai/v1/chat/completions",
        "openai_error_401_invalid_api_key",
        {"model": "gpt-4o", "messages": []},
    ),
    (
        "/anthropic/v1/messages",
        "anthropic_messages_stream_sdk_basic",
        {
            "model": "claude-3-opus-latest",
            "max_tokens": 50,
            "stream": True,
            "messages": [],
        },
    ),
    (
        "/gemini/v1beta/models/gemini-2.5-flash:generateContent?key=AIza-query-"
        + "x" * 8,
        "gemini_generate_content_cached_thoughts",
        {"contents": []},
    ),
    ("/openai/v1/chat/completions", "openai_chat_nonstream_docs_default", b"{broken"),
]


@pytest.fixture
def observed_gateway(redis_server, tmp_path):
    settings = {"log_level": "DEBUG", "log_format": "json"}
    env_otel = {
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "console",
        "OTEL_METRIC_EXPORT_INTERVAL": "300",
    }
    with running_gateway(
        tmp_path,
        redis_server,
        tenant="sec-" + secrets.token_hex(4),
        settings=settings,
        env=env_otel,
    ) as gateway:
        yield gateway


def test_mixed_workload_leaves_no_secret_in_logs_spans_or_metrics(
    observed_gateway, tmp_path
) -> None:
    gateway = observed_gateway
    for path, fixture, body in WORKLOAD:
        for identity in ("alice", "nearly-broke"):
            gateway.client.post(
                path,
                body,
                {
                    "x-tollgate-identity": identity,
                    REPLAY_HEADER: fixture,
                    **CLIENT_SECRETS,
                },
            )
    gateway.client.post("/openai/v1/chat/completions", {"model": "x"}, CLIENT_SECRETS)
    time.sleep(1.5)  # let the console exporters flush spans and metrics
    gateway.extproc.stop()

    logs = "\n".join(
        path.read_text(errors="replace") for path in tmp_path.rglob("*.log")
    )
    forbidden = [
        gateway.openai_key,
        gateway.anthropic_key,
        *CLIENT_SECRETS.values(),
        "AIza-query-",
    ]
    assert '"gen_ai.operation.name"' in logs, "spans were not exported"
    assert "tollgate.spend" in logs, "metrics were not exported"
    assert [] == [secret for secret in forbidden if secret in logs]
