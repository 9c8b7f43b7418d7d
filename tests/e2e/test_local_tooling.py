"""The local process tooling: Redis, the provider stand-in, Envoy configs, and
a request through a real Envoy with a no-op ext_proc server.

Tests marked ``e2e`` start real processes; the rest check the pieces that
decide what those processes get.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext_proc_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ext_proc_grpc
from google.protobuf import struct_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from redis.backoff import NoBackoff
from redis.retry import Retry

from extproc.errors import ConfigError
from extproc.drain import drain
from extproc.local import (
    LOCAL_CONFIG_PATH,
    EnvoyProcess,
    RecordedRequest,
    RedisProcess,
    Reply,
    StandIn,
    demo_responder,
    envoy_binary,
    free_port,
    redis_server_binary,
    render_local_config,
)

ENVOY_DIR = Path(__file__).resolve().parents[2] / "envoy"
# egress.yaml names a JWKS file that exists only in the gateway pod; Envoy's
# validation reads it, so tests/deploy validates that config with the file
# stood in for.
ENVOY_CONFIGS = sorted(
    p for p in ENVOY_DIR.glob("**/*.yaml") if p.name != "egress.yaml"
)
CHAT_PATH = "/v1/chat/completions"
CHAT_REQUEST = (
    b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'
)

_EMPTY_ANSWER = {
    "request_headers": ext_proc_pb2.HeadersResponse,
    "response_headers": ext_proc_pb2.HeadersResponse,
    "request_body": ext_proc_pb2.BodyResponse,
    "response_body": ext_proc_pb2.BodyResponse,
    "request_trailers": ext_proc_pb2.TrailersResponse,
    "response_trailers": ext_proc_pb2.TrailersResponse,
}


class NoOpProcessor(ext_proc_grpc.ExternalProcessorServicer):
    """Answers every message with an empty response of the matching kind.

    Ends the stream itself after the last response body chunk. Records the
    kinds it saw; ``final_metadata`` (if set) goes out as ``tollgate``
    dynamic metadata with that last answer.
    """

    def __init__(self, final_metadata: dict[str, Any] | None = None) -> None:
        self.final_metadata = final_metadata
        self._lock = threading.Lock()
        self._kinds: list[str] = []

    @property
    def kinds(self) -> list[str]:
        with self._lock:
            return list(self._kinds)

    def Process(
        self,
        request_iterator: Iterator[ext_proc_pb2.ProcessingRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[ext_proc_pb2.ProcessingResponse]:
        for request in request_iterator:
            kind = request.WhichOneof("request")
            with self._lock:
                self._kinds.append(kind)
            last = kind == "response_body" and request.response_body.end_of_stream

            answer = ext_proc_pb2.ProcessingResponse(**{kind: _EMPTY_ANSWER[kind]()})
            if last and self.final_metadata is not None:
                answer.dynamic_metadata.CopyFrom(
                    _tollgate_metadata(self.final_metadata)
                )

            yield answer
            if last:
                return


def _tollgate_metadata(values: dict[str, Any]) -> struct_pb2.Struct:
    metadata = struct_pb2.Struct()
    metadata.update({"tollgate": values})
    return metadata


@pytest.fixture
def processor() -> Iterator[tuple[NoOpProcessor, int]]:
    """A no-op ext_proc server with gRPC health SERVING, on a free port."""
    servicer = NoOpProcessor()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    ext_proc_grpc.add_ExternalProcessorServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()

    yield servicer, port

    server.stop(grace=None)


def _json_reply(body: bytes) -> Reply:
    headers = {"content-type": "application/json", "content-length": str(len(body))}
    return Reply(200, headers, [body])


def _run_envoy(tmp_path: Path, extproc_port: int, standin: StandIn) -> EnvoyProcess:
    config = render_local_config(
        listen_port=0,
        admin_port=0,
        extproc_address=f"127.0.0.1:{extproc_port}",
        upstreams={"openai": ("127.0.0.1", standin.port, False)},
        access_log_path=str(tmp_path / "access.log"),
    )
    return EnvoyProcess(config, tmp_path / "envoy")


def _post(port: int, path: str, body: bytes) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body, {"content-type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _timed_reads(response: http.client.HTTPResponse) -> list[tuple[float, bytes]]:
    reads = []
    while chunk := response.read1(65536):
        reads.append((time.monotonic(), chunk))
    return reads


def _wait_for_lines(path: Path, timeout_s: float = 5.0) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and (lines := path.read_text().splitlines()):
            return lines
        time.sleep(0.05)
    raise AssertionError(f"nothing was written to {path}")


# Binaries


def test_envoy_binary_is_the_wheel_file_not_the_protos_package() -> None:
    found = envoy_binary({})

    assert ("_bin", "envoy") == (found.parent.name, found.name)


def test_envoy_binary_override_must_be_executable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TOLLGATE_ENVOY_BIN"):
        envoy_binary({"TOLLGATE_ENVOY_BIN": str(tmp_path / "missing")})


def test_redis_server_binary_is_found() -> None:
    assert "redis-server" == redis_server_binary({}).name


# Config rendering


def test_render_points_a_plain_upstream_at_a_static_address() -> None:
    config = render_local_config(
        listen_port=1,
        admin_port=2,
        extproc_address="127.0.0.1:3",
        upstreams={"anthropic": ("127.0.0.1", 4, False)},
    )

    cluster = _cluster(config, "anthropic")
    assert "STATIC" == cluster["type"]
    assert "transport_socket" not in cluster
    assert {"address": "127.0.0.1", "port_value": 4} == _endpoint(cluster)


def test_render_keeps_tls_and_names_the_new_host() -> None:
    config = render_local_config(
        listen_port=1,
        admin_port=2,
        extproc_address="127.0.0.1:3",
        upstreams={"openai": ("eu.api.example.com", 8443, True)},
    )

    tls = _cluster(config, "openai")["transport_socket"]["typed_config"]
    assert "eu.api.example.com" == tls["sni"]
    assert [{"san_type": "DNS", "matcher": {"exact": "eu.api.example.com"}}] == (
        tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"]
    )


def test_render_accepts_a_unix_socket_for_the_extproc() -> None:
    config = render_local_config(
        listen_port=1, admin_port=2, extproc_address="unix:/run/tollgate.sock"
    )

    cluster = _cluster(config, "tollgate_extproc")
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert {"pipe": {"path": "/run/tollgate.sock"}} == endpoint["endpoint"]["address"]


def test_render_refuses_an_unknown_provider() -> None:
    with pytest.raises(ConfigError, match="cohere"):
        render_local_config(
            listen_port=1,
            admin_port=2,
            extproc_address="127.0.0.1:3",
            upstreams={"cohere": ("127.0.0.1", 4, False)},
        )


def test_render_names_the_missing_template(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"local\.yaml"):
        render_local_config(
            listen_port=1,
            admin_port=2,
            extproc_address="127.0.0.1:3",
            template_path=tmp_path / "local.yaml",
        )


def _cluster(config: dict[str, Any], name: str) -> dict[str, Any]:
    [cluster] = [c for c in config["static_resources"]["clusters"] if c["name"] == name]
    return cluster


def _endpoint(cluster: dict[str, Any]) -> dict[str, Any]:
    [group] = cluster["load_assignment"]["endpoints"]
    [endpoint] = group["lb_endpoints"]
    address: dict[str, Any] = endpoint["endpoint"]["address"]["socket_address"]
    return address


# Envoy validation


def test_the_committed_local_config_is_among_the_validated() -> None:
    assert LOCAL_CONFIG_PATH in ENVOY_CONFIGS


@pytest.mark.e2e
@pytest.mark.parametrize(
    "config_path",
    ENVOY_CONFIGS,
    ids=[str(p.relative_to(ENVOY_DIR)) for p in ENVOY_CONFIGS],
)
def test_envoy_accepts_the_committed_config(config_path: Path) -> None:
    result = _validate(config_path)

    assert 0 == result.returncode, result.stdout + result.stderr


@pytest.mark.e2e
def test_envoy_accepts_a_rendered_config(tmp_path: Path) -> None:
    config = render_local_config(
        listen_port=18000,
        admin_port=18001,
        extproc_address="unix:/tmp/tollgate-extproc.sock",
        upstreams={
            "openai": ("127.0.0.1", 18002, False),
            "anthropic": ("localhost", 18003, False),
            "gemini": ("gemini.example.com", 443, True),
        },
        access_log_path=str(tmp_path / "access.log"),
    )
    path = tmp_path / "rendered.json"
    path.write_text(json.dumps(config))

    result = _validate(path)

    assert 0 == result.returncode, result.stdout + result.stderr


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


# Redis


@pytest.mark.e2e
def test_redis_restarts_on_the_same_port_without_data(tmp_path: Path) -> None:
    with RedisProcess(workdir=tmp_path) as server:
        port = server.port
        client = redis.Redis.from_url(server.url, retry=Retry(NoBackoff(), 0))
        client.set("budget", "1")

        server.stop()
        with pytest.raises(redis.exceptions.ConnectionError):
            client.ping()
        server.start()

        assert port == server.port
        assert client.ping()
        assert client.get("budget") is None
        client.close()


@pytest.mark.e2e
def test_redis_reports_a_taken_port_with_its_log(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]

        with pytest.raises(ConfigError, match="redis-server exited"):
            RedisProcess(port, workdir=tmp_path).start()


# The provider stand-in


@pytest.mark.e2e
def test_standin_sends_each_chunk_as_its_own_read() -> None:
    chunks = [b"data: one\n\n", b"data: two\n\n", b"data: three\n\n"]
    reply = Reply(200, {"content-type": "text/event-stream"}, chunks, 0.2)

    with StandIn(lambda req: reply) as standin:
        conn = http.client.HTTPConnection("127.0.0.1", standin.port, timeout=5)
        conn.request("POST", "/v1/stream", b"{}")
        response = conn.getresponse()
        reads = [chunk for _, chunk in _timed_reads(response)]
        conn.close()

    assert "chunked" == response.getheader("transfer-encoding")
    assert chunks == reads


@pytest.mark.e2e
def test_standin_records_method_path_lowercased_headers_and_body() -> None:
    with StandIn(lambda req: _json_reply(b"{}")) as standin:
        conn = http.client.HTTPConnection("127.0.0.1", standin.port, timeout=5)
        conn.request(
            "POST",
            "/v1/x?y=1",
            iter([b"ab", b"cd"]),
            {"X-Key": "K"},
            encode_chunked=True,
        )
        conn.getresponse().read()
        conn.close()

    [seen] = standin.requests
    assert ("POST", "/v1/x?y=1", b"abcd") == (seen.method, seen.path, seen.body)
    assert "K" == seen.headers["x-key"]


@pytest.mark.e2e
def test_standin_survives_a_client_leaving_mid_stream() -> None:
    stream = Reply(200, {}, [b"first\n", b"second\n", b"third\n"], 0.2)
    replies = iter([stream, _json_reply(b'{"ok":true}')])

    with StandIn(lambda req: next(replies)) as standin:
        conn = http.client.HTTPConnection("127.0.0.1", standin.port, timeout=5)
        conn.request("POST", "/stream", b"{}")
        assert b"first\n" == conn.getresponse().read1(64)
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()

        status, body = _post(standin.port, "/after", b"{}")

    assert (200, b'{"ok":true}') == (status, body)


# The demo provider


def test_demo_chat_stream_ends_with_a_usage_chunk_then_done() -> None:
    request = {
        "model": "gpt-4o-mini",
        "stream": True,
        "stream_options": {"include_usage": True},
    }

    reply = demo_responder(_demo_request(CHAT_PATH, request))

    events = [c.removeprefix(b"data: ").strip() for c in reply.chunks]
    usage_chunk = json.loads(events[-2])
    assert b"[DONE]" == events[-1]
    assert ([], "gpt-4o-mini") == (usage_chunk["choices"], usage_chunk["model"])
    assert usage_chunk["usage"]["prompt_tokens"] > 0


def test_demo_anthropic_stream_follows_the_event_order() -> None:
    request = {"model": "claude-x", "max_tokens": 64, "stream": True, "messages": []}

    reply = demo_responder(_demo_request("/v1/messages", request))

    names = [c.split(b"\n", 1)[0].removeprefix(b"event: ") for c in reply.chunks]
    assert [b"message_start", b"content_block_start", b"ping"] == names[:3]
    assert [b"content_block_stop", b"message_delta", b"message_stop"] == names[-3:]
    assert {b"content_block_delta"} == set(names[3:-3])


def test_demo_lists_models_for_a_bodyless_read() -> None:
    reply = demo_responder(RecordedRequest("GET", "/v1/models", {}, b""))

    listing = json.loads(b"".join(reply.chunks))
    assert (200, "list") == (reply.status, listing["object"])
    assert "gpt-4o-mini" in {model["id"] for model in listing["data"]}


def test_demo_counts_anthropic_tokens_without_generating_any() -> None:
    request = {"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]}

    reply = demo_responder(_demo_request("/v1/messages/count_tokens", request))

    assert ["input_tokens"] == list(json.loads(b"".join(reply.chunks)))


def _demo_request(path: str, body: dict[str, Any]) -> RecordedRequest:
    return RecordedRequest("POST", path, {}, json.dumps(body).encode())


# Envoy end to end


@pytest.mark.e2e
def test_envoy_proxies_through_the_extproc_to_the_rewritten_path(
    tmp_path: Path, processor: tuple[NoOpProcessor, int]
) -> None:
    servicer, extproc_port = processor
    answer = b'{"id": "chatcmpl-1",  "object":"chat.completion" ,\n "choices": []}'

    with (
        StandIn(lambda req: _json_reply(answer)) as standin,
        _run_envoy(tmp_path, extproc_port, standin) as envoy,
    ):
        status, body = _post(envoy.listen_port, "/openai" + CHAT_PATH, CHAT_REQUEST)

    [seen] = standin.requests
    assert (200, answer) == (status, body)
    assert (CHAT_PATH, CHAT_REQUEST) == (seen.path, seen.body)
    assert "api.openai.com" == seen.headers["host"]
    kinds = servicer.kinds
    assert ["request_headers", "request_body", "response_headers"] == kinds[:3]
    assert {"response_body"} == set(kinds[3:])


def test_envoy_sends_a_request_naming_the_provider_host_to_that_provider(
    tmp_path: Path, processor: tuple[NoOpProcessor, int]
) -> None:
    _, extproc_port = processor
    answer = b'{"id": "chatcmpl-1", "choices": []}'

    with (
        StandIn(lambda req: _json_reply(answer)) as standin,
        _run_envoy(tmp_path, extproc_port, standin) as envoy,
    ):
        status = _post_to_host(envoy.listen_port, CHAT_PATH, "api.openai.com")

    [seen] = standin.requests
    assert (200, CHAT_PATH) == (status, seen.path)


@pytest.mark.e2e
def test_envoy_forwards_a_stream_chunk_by_chunk(
    tmp_path: Path, processor: tuple[NoOpProcessor, int]
) -> None:
    _, extproc_port = processor
    events = [b'data: {"n":1}\n\n', b'data: {"n":2}\n\n', b"data: [DONE]\n\n"]
    stream = Reply(200, {"content-type": "text/event-stream"}, events, 0.3)

    with (
        StandIn(lambda req: stream) as standin,
        _run_envoy(tmp_path, extproc_port, standin) as envoy,
    ):
        conn = http.client.HTTPConnection("127.0.0.1", envoy.listen_port, timeout=10)
        conn.request("POST", "/openai" + CHAT_PATH, CHAT_REQUEST)
        reads = _timed_reads(conn.getresponse())
        conn.close()

    assert b"".join(events) == b"".join(chunk for _, chunk in reads)
    assert reads[-1][0] - reads[0][0] >= 0.4, "the stream was held back"


@pytest.mark.e2e
def test_drain_lets_a_stream_in_flight_finish_then_stops_envoy(
    tmp_path: Path, processor: tuple[NoOpProcessor, int]
) -> None:
    _, extproc_port = processor
    events = [b'data: {"n":%d}\n\n' % n for n in range(6)] + [b"data: [DONE]\n\n"]
    stream = Reply(200, {"content-type": "text/event-stream"}, events, 0.25)

    with (
        StandIn(lambda req: stream) as standin,
        _run_envoy(tmp_path, extproc_port, standin) as envoy,
    ):
        conn = http.client.HTTPConnection("127.0.0.1", envoy.listen_port, timeout=10)
        conn.request("POST", "/openai" + CHAT_PATH, CHAT_REQUEST)
        response = conn.getresponse()
        admin = f"http://127.0.0.1:{envoy.admin_port}"
        outcome: list[str] = []
        draining = threading.Thread(
            target=lambda: outcome.append(drain(admin, max_wait_s=10))
        )
        draining.start()
        received = response.read()
        draining.join(timeout=15)
        conn.close()
        envoy._process.wait(timeout=10)

    assert b"".join(events) == received
    assert ["stopped Envoy with no call in flight"] == outcome


@pytest.mark.e2e
def test_envoy_logs_extproc_metadata_and_no_query(
    tmp_path: Path, processor: tuple[NoOpProcessor, int]
) -> None:
    servicer, extproc_port = processor
    servicer.final_metadata = {
        "identity": "user:ada",
        "decision": "allow",
        "cost_micro_usd": 1234,
    }

    with StandIn(lambda req: _json_reply(b"{}")) as standin:
        upstream = f"127.0.0.1:{standin.port}"
        with _run_envoy(tmp_path, extproc_port, standin) as envoy:
            path = "/openai" + CHAT_PATH + "?key=secret-in-query"
            status, _ = _post(envoy.listen_port, path, CHAT_REQUEST)
            [line] = _wait_for_lines(envoy.access_log_path)

    entry = json.loads(line)
    assert 200 == status
    assert ("user:ada", "allow", 1234) == (
        entry["identity"],
        entry["decision"],
        entry["cost_micro_usd"],
    )
    assert (200, "openai", upstream) == (
        entry["status"],
        entry["route"],
        entry["upstream_host"],
    )
    assert CHAT_PATH == entry["path"]
    assert "secret-in-query" not in line


@pytest.mark.e2e
def test_envoy_replaces_a_client_request_id_and_returns_its_own(
    tmp_path: Path, processor: tuple[NoOpProcessor, int]
) -> None:
    _, extproc_port = processor

    with (
        StandIn(lambda req: _json_reply(b"{}")) as standin,
        _run_envoy(tmp_path, extproc_port, standin) as envoy,
    ):
        conn = http.client.HTTPConnection("127.0.0.1", envoy.listen_port, timeout=10)
        headers = {"x-request-id": "chosen-by-client"}
        conn.request("POST", "/openai" + CHAT_PATH, CHAT_REQUEST, headers)
        response = conn.getresponse()
        response.read()
        conn.close()

    [seen] = standin.requests
    assert "chosen-by-client" != seen.headers["x-request-id"]
    assert seen.headers["x-request-id"] == response.getheader("x-request-id")


@pytest.mark.e2e
def test_envoy_buffers_a_one_mebibyte_request_body(
    tmp_path: Path, processor: tuple[NoOpProcessor, int]
) -> None:
    _, extproc_port = processor
    content = "x" * (1 << 20)
    big = json.dumps({"model": "m", "messages": [{"content": content}]}).encode()

    with (
        StandIn(lambda req: _json_reply(b"{}")) as standin,
        _run_envoy(tmp_path, extproc_port, standin) as envoy,
    ):
        status, _ = _post(envoy.listen_port, "/openai" + CHAT_PATH, big)

    [seen] = standin.requests
    assert (200, big) == (status, seen.body)


@pytest.mark.e2e
def test_envoy_fails_closed_when_the_extproc_is_down(tmp_path: Path) -> None:
    with StandIn(lambda req: _json_reply(b"{}")) as standin:
        with _run_envoy(tmp_path, free_port(), standin) as envoy:
            status, _ = _post(envoy.listen_port, "/openai" + CHAT_PATH, CHAT_REQUEST)

        assert (500, []) == (status, standin.requests)


@pytest.mark.e2e
def test_envoy_answers_404_off_the_provider_routes(
    tmp_path: Path, processor: tuple[NoOpProcessor, int]
) -> None:
    _, extproc_port = processor

    with StandIn(lambda req: _json_reply(b"{}")) as standin:
        with _run_envoy(tmp_path, extproc_port, standin) as envoy:
            status, _ = _post(envoy.listen_port, "/cohere" + CHAT_PATH, b"{}")

        assert (404, []) == (status, standin.requests)


@pytest.mark.e2e
def test_envoy_failing_to_start_reports_its_log(tmp_path: Path) -> None:
    config = render_local_config(
        listen_port=0, admin_port=0, extproc_address="127.0.0.1:1"
    )
    config["static_resources"]["clusters"] = []

    with pytest.raises(ConfigError, match="exited with code"):
        EnvoyProcess(config, tmp_path).start()


@pytest.mark.e2e
def test_envoy_routes_by_the_path_prefix_before_the_host(
    tmp_path: Path, processor: tuple[NoOpProcessor, int]
) -> None:
    # Tollgate picks the credential by prefix first; Envoy must pick the
    # provider in the same order, or one provider's key reaches the other.
    _, extproc_port = processor

    with (
        StandIn(lambda req: _json_reply(b"{}")) as standin,
        _run_envoy(tmp_path, extproc_port, standin) as envoy,
    ):
        status = _post_to_host(
            envoy.listen_port, "/openai" + CHAT_PATH, "api.anthropic.com:443"
        )

    [seen] = standin.requests
    assert (200, CHAT_PATH, "api.openai.com") == (
        status,
        seen.path,
        seen.headers["host"],
    )


def _post_to_host(port: int, path: str, host: str) -> int:
    """POST the chat request to ``path`` with ``Host: host``; the status."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(
            "POST", path, CHAT_REQUEST, {"content-type": "application/json", "host": host}
        )
        return conn.getresponse().status
    finally:
        conn.close()
