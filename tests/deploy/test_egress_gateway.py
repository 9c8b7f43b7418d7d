"""The egress gateway's Envoy config carries requests end to end through
Tollgate: verified identity in, verified TLS out, metered in between."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from extproc import probe
from extproc.local import EnvoyProcess, free_port, render_egress_config
from tests.deploy.conftest import ANTHROPIC_HOST, OPENAI_HOST, EgressGateway
from tests.deploy.pki import TokenSigner
from tests.e2e.harness import REPLAY_HEADER, Response, exchange_raw, fixture_body

pytestmark = pytest.mark.e2e

CHAT = {
    "model": "gpt-4o-mini",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "hello"}],
}
MESSAGES = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 64,
    "stream": True,
    "messages": [{"role": "user", "content": "hello"}],
}
OPENAI_FIXTURE = "openai_chat_nonstream_docs_default"
ANTHROPIC_STREAM_FIXTURE = "anthropic_messages_stream_recorded"
WORKLOAD = "system:serviceaccount:team-a:coding-agent"


def _post(
    gateway: EgressGateway, path: str, body: dict[str, Any], headers: dict[str, str]
) -> Response:
    return gateway.client.post(path, body, headers)


def _eventually(check: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def _access_log(gateway: EgressGateway, request_id: str) -> dict[str, Any]:
    path = gateway.envoy.access_log_path

    def entry() -> dict[str, Any] | None:
        for line in path.read_text().splitlines() if path.exists() else []:
            record = json.loads(line)
            if record.get("tollgate_request_id") == request_id:
                return record
        return None

    found = _eventually(entry)
    assert found is not None, f"no access log line for {request_id}"
    return found


def _access_log_where(gateway: EgressGateway, **wanted: str) -> dict[str, Any]:
    path = gateway.envoy.access_log_path

    def entry() -> dict[str, Any] | None:
        for line in reversed(path.read_text().splitlines()):
            record = json.loads(line)
            if all(record.get(k) == v for k, v in wanted.items()):
                return record
        return None

    found = _eventually(entry)
    assert found is not None, f"no access log line with {wanted}"
    return found


def test_host_routed_call_reaches_provider_over_verified_tls_and_is_metered(
    egress_gateway: EgressGateway,
) -> None:
    token = egress_gateway.token(WORKLOAD)

    response = _post(
        egress_gateway,
        "/v1/chat/completions",
        CHAT,
        {
            "host": OPENAI_HOST,
            "authorization": f"Bearer {token}",
            REPLAY_HEADER: OPENAI_FIXTURE,
        },
    )

    assert 200 == response.status
    assert fixture_body(OPENAI_FIXTURE) == response.body
    seen = egress_gateway.openai.requests[-1]
    assert "/v1/chat/completions" == seen.path
    assert OPENAI_HOST == seen.headers["host"]
    assert f"Bearer {egress_gateway.openai_key}" == seen.headers["authorization"]
    assert "x-tollgate-identity" not in seen.headers
    assert token not in json.dumps(seen.headers)
    request_id = response.headers["x-tollgate-request-id"]
    settlement = egress_gateway.ledger.settlement(request_id)
    assert "metered" == settlement["outcome"]
    logged = _access_log(egress_gateway, request_id)
    assert "openai-host" == logged["route"]
    assert "openai" == logged["upstream_cluster"]
    assert WORKLOAD == logged["identity"]
    assert str(settlement["cost_micro_usd"]) == str(logged["cost_micro_usd"])
    assert "metered" == logged["outcome"]


def test_prefix_routed_stream_reaches_provider_with_its_own_key(
    egress_gateway: EgressGateway,
) -> None:
    # The Anthropic SDK sends its key as x-api-key: the token goes there.
    token = egress_gateway.token(WORKLOAD)

    response = _post(
        egress_gateway,
        "/anthropic/v1/messages",
        MESSAGES,
        {
            "x-api-key": token,
            REPLAY_HEADER: ANTHROPIC_STREAM_FIXTURE,
        },
    )

    assert 200 == response.status
    assert fixture_body(ANTHROPIC_STREAM_FIXTURE) == response.body
    seen = egress_gateway.anthropic.requests[-1]
    assert "/v1/messages" == seen.path
    assert ANTHROPIC_HOST == seen.headers["host"]
    assert egress_gateway.anthropic_key == seen.headers["x-api-key"]
    settlement = egress_gateway.ledger.settlement(
        response.headers["x-tollgate-request-id"]
    )
    assert "metered" == settlement["outcome"]
    assert settlement["cost_micro_usd"] > 0


def test_a_path_and_a_host_naming_two_providers_are_refused(
    egress_gateway: EgressGateway,
) -> None:
    # Envoy here tries prefixes before hosts, as Tollgate does, but a config
    # that went by host (a mesh route, an operator's own) would send OpenAI's
    # key to Anthropic: Tollgate refuses the pair whatever Envoy would do.
    before = (len(egress_gateway.openai.requests), len(egress_gateway.anthropic.requests))

    response = _post(
        egress_gateway,
        "/openai/v1/chat/completions",
        CHAT,
        {
            "host": ANTHROPIC_HOST,
            "authorization": f"Bearer {egress_gateway.token(WORKLOAD)}",
            REPLAY_HEADER: OPENAI_FIXTURE,
        },
    )

    after = (len(egress_gateway.openai.requests), len(egress_gateway.anthropic.requests))
    assert (400, "route_conflict", before) == (
        response.status,
        response.headers.get("x-tollgate-refusal"),
        after,
    )


def test_identity_comes_from_the_token_not_from_the_clients_header(
    egress_gateway: EgressGateway,
) -> None:
    response = _post(
        egress_gateway,
        "/openai/v1/chat/completions",
        CHAT,
        {
            "authorization": f"Bearer {egress_gateway.token(WORKLOAD)}",
            "x-tollgate-identity": "someone-else-pays",
            REPLAY_HEADER: OPENAI_FIXTURE,
        },
    )

    assert 200 == response.status
    logged = _access_log(egress_gateway, response.headers["x-tollgate-request-id"])
    assert WORKLOAD == logged["identity"]


def test_identity_header_without_a_token_is_refused_before_any_provider(
    egress_gateway: EgressGateway,
) -> None:
    before = len(egress_gateway.openai.requests)

    response = _post(
        egress_gateway,
        "/openai/v1/chat/completions",
        CHAT,
        {
            "x-tollgate-identity": "alice",
            "authorization": "Bearer sk-client-key",
            REPLAY_HEADER: OPENAI_FIXTURE,
        },
    )

    assert 401 == response.status
    assert before == len(egress_gateway.openai.requests)


def test_token_for_another_audience_is_refused(egress_gateway: EgressGateway) -> None:
    # A pod's default token (audience: the API server) must not spend money.
    token = egress_gateway.token(WORKLOAD, audience="https://kubernetes.default.svc")
    before = len(egress_gateway.openai.requests)

    response = _post(
        egress_gateway,
        "/openai/v1/chat/completions",
        CHAT,
        {
            "authorization": f"Bearer {token}",
            REPLAY_HEADER: OPENAI_FIXTURE,
        },
    )

    assert 403 == response.status
    assert before == len(egress_gateway.openai.requests)


def test_token_from_an_unknown_signer_is_refused(
    egress_gateway: EgressGateway, tmp_path: Path
) -> None:
    forged = TokenSigner(tmp_path, key_id=egress_gateway.signer.key_id).token(WORKLOAD)

    response = _post(
        egress_gateway,
        "/openai/v1/chat/completions",
        CHAT,
        {
            "authorization": f"Bearer {forged}",
            REPLAY_HEADER: OPENAI_FIXTURE,
        },
    )

    assert 401 == response.status


def test_certificate_for_another_name_is_refused(egress_gateway: EgressGateway) -> None:
    # azure-openai points at a server whose certificate (from the trusted CA)
    # names api.openai.com, not the Azure resource.
    response = _post(
        egress_gateway,
        "/azure-openai/openai/v1/chat/completions",
        CHAT,
        {
            "authorization": f"Bearer {egress_gateway.token(WORKLOAD)}",
        },
    )

    assert 503 == response.status
    assert [] == egress_gateway.impostor.requests
    logged = _access_log_where(egress_gateway, upstream_cluster="azure-openai")
    assert "CERTIFICATE_VERIFY_FAILED" in logged["upstream_failure"]


def test_certificate_from_an_untrusted_ca_is_refused(
    egress_gateway: EgressGateway,
) -> None:
    response = _post(
        egress_gateway,
        "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
        {"contents": [{"parts": [{"text": "hello"}]}]},
        {"x-goog-api-key": egress_gateway.token(WORKLOAD)},
    )

    assert 503 == response.status
    assert [] == egress_gateway.stranger.requests
    logged = _access_log_where(egress_gateway, upstream_cluster="gemini")
    assert "CERTIFICATE_VERIFY_FAILED" in logged["upstream_failure"]


def test_ready_and_live_answer_on_the_health_listener(
    egress_gateway: EgressGateway,
) -> None:
    port = _health_port(egress_gateway.envoy)

    assert 200 == _wait_for_status(port, "/ready", 200)
    assert 200 == _get_status(port, "/live")
    assert 404 == _get_status(port, "/clusters")


def test_metrics_are_served_but_not_the_admin_interface(
    egress_gateway: EgressGateway,
) -> None:
    port = _health_port(egress_gateway.envoy)

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("GET", "/stats/prometheus")
    reply = connection.getresponse()
    body = reply.read().decode()
    connection.close()

    assert 200 == reply.status
    assert "envoy_cluster_upstream_rq" in body


def test_without_the_extproc_server_it_is_not_ready_and_fails_closed(
    egress_gateway: EgressGateway, tmp_path: Path
) -> None:
    config = render_egress_config(
        listen_port=free_port(),
        health_port=free_port(),
        admin_port=free_port(),
        extproc_address=f"unix:{tmp_path / 'nobody-listens.sock'}",
        upstreams={"openai": ("127.0.0.1", egress_gateway.openai.port)},
        trusted_ca_path=str(egress_gateway.workdir / "ca.pem"),
        jwks_path=str(egress_gateway.signer.jwks_path),
    )
    before = len(egress_gateway.openai.requests)

    with EnvoyProcess(config, tmp_path / "envoy") as envoy:
        ready = _wait_for_status(_health_port(envoy), "/ready", 503)
        response = _raw_post(
            envoy.listen_port,
            "/openai/v1/chat/completions",
            {
                "authorization": f"Bearer {egress_gateway.token(WORKLOAD)}",
            },
        )

    assert 503 == ready
    assert 503 == response
    assert before == len(egress_gateway.openai.requests)


def _health_port(envoy: EnvoyProcess) -> int:
    for listener in envoy.config["static_resources"]["listeners"]:
        if listener["name"] == "tollgate_health":
            port: int = listener["address"]["socket_address"]["port_value"]
            return port
    raise AssertionError("no health listener")


def _get_status(port: int, path: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        reply = connection.getresponse()
        reply.read()
        return reply.status
    finally:
        connection.close()


def _wait_for_status(port: int, path: str, wanted: int, timeout_s: float = 10.0) -> int:
    deadline = time.monotonic() + timeout_s
    status = _get_status(port, path)
    while status != wanted and time.monotonic() < deadline:
        time.sleep(0.1)
        status = _get_status(port, path)

    return status


def _raw_post(port: int, path: str, headers: dict[str, str]) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(
            "POST",
            path,
            body=json.dumps(CHAT).encode(),
            headers={"content-type": "application/json", **headers},
        )
        reply = connection.getresponse()
        reply.read()
        return reply.status
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("request_bytes", "status_line"),
    [
        (b"GET /openai/v1/models HTTP/1.0\r\n\r\n", b"HTTP/1.1 426 Upgrade Required"),
        (
            b"GET /openai/v1/models HTTP/1.1\r\nhost: gateway\r\n"
            b"x-note: a\x7fb\r\n\r\n",
            b"HTTP/1.1 400 Bad Request",
        ),
    ],
    ids=["http_1_0", "del_in_header_value"],
)
def test_unparsable_request_gets_envoys_own_answer(
    egress_gateway: EgressGateway, request_bytes: bytes, status_line: bytes
) -> None:
    answer = exchange_raw(egress_gateway.client.port, request_bytes)

    assert answer.startswith(status_line + b"\r\n"), answer


def test_probe_reports_serving_over_the_socket(egress_gateway: EgressGateway) -> None:
    assert 0 == probe.main([egress_gateway.extproc.address, "--timeout-s", "5"])


def test_client_cannot_make_envoy_retry_a_call(egress_gateway: EgressGateway) -> None:
    # x-envoy-retry-on and x-envoy-max-retries from an application (a pod
    # address is "internal" to Envoy by default) would have the router send
    # one metered call to the provider several times: spend no one pays for.
    before = len(egress_gateway.openai.requests)

    response = _post(
        egress_gateway,
        "/openai/v1/chat/completions",
        CHAT,
        {
            "authorization": f"Bearer {egress_gateway.token(WORKLOAD)}",
            "x-envoy-retry-on": "5xx,reset,retriable-status-codes",
            "x-envoy-retriable-status-codes": "500",
            "x-envoy-max-retries": "3",
            # No such fixture: the stand-in answers 500.
            REPLAY_HEADER: "no-such-fixture",
        },
    )

    assert 500 == response.status
    assert before + 1 == len(egress_gateway.openai.requests)


def test_provider_is_told_nothing_of_the_callers_network(
    egress_gateway: EgressGateway,
) -> None:
    # Envoy appends the pod's address to x-forwarded-for and names it in
    # x-envoy-external-address; neither is the provider's business, and a
    # client-written x-forwarded-for would travel along with them.
    response = _post(
        egress_gateway,
        "/openai/v1/chat/completions",
        CHAT,
        {
            "authorization": f"Bearer {egress_gateway.token(WORKLOAD)}",
            "x-forwarded-for": "203.0.113.7",
            REPLAY_HEADER: OPENAI_FIXTURE,
        },
    )

    assert 200 == response.status
    seen = egress_gateway.openai.requests[-1].headers
    assert "x-forwarded-for" not in seen
    assert [] == [name for name in seen if name.lower().startswith("x-envoy-")]
