"""Start the providers and the three gateways, and wire them together.

Every gateway Envoy runs the committed ``envoy/local.yaml`` as
``render_local_config`` patches it for a local run (so it carries the same
access log, limits and processing mode as ``tollgate up``), with two
benchmark changes: a route that sends stream requests (marked with
``payloads.STREAM_ROUTE_HEADER``) to the SSE stand-in, and, for the floor,
no ext_proc filter at all.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from extproc.local import EnvoyProcess, RedisProcess, free_port, render_local_config
from extproc.local.extproc import ExtprocProcess
from tollbench import payloads
from tollbench.children import Child

log = logging.getLogger(__name__)

FLOOR, NOOP, SPLIT, FULL = "floor", "noop", "split", "full"
SETUPS = (FLOOR, NOOP, FULL)
"""Always run. SPLIT (``--split``) runs between NOOP and FULL when asked."""
TENANT = "bench"
EXTPROC_FILTER = "envoy.filters.http.ext_proc"
HCM = "envoy.filters.network.http_connection_manager"
SSE_CLUSTER = "bench_sse"
COLLECTOR_CLUSTER = "otel_collector"
"""Where the bootstrap sends Envoy's spans, when it traces."""
PROVIDER_CLUSTERS = ("openai", "anthropic", "gemini")

POLICY = """\
# Every kind of limit Tollgate enforces, each far too large to refuse: a
# reservation holds on the user's budget and rate limits, the user-with-tool
# budget, the tool, the project, the team and the organisation at once.
version: 1
tenant: {tenant}
identity:
  header: {identity_header}
providers:
  openai:
    family: openai
    route_prefix: /openai
    credential: {{env: {credential_env}}}
directory:
{directory}
users:
  default:
    budget: {{capacity_usd: "{huge}", refill_usd: "{huge}", refill_every: 1d}}
    rate_limits: {{requests_per_minute: {huge}, tokens_per_minute: {huge}}}
tools:
  header: {tool_header}
  limits:
    {tool}:
      per_user: {{budget: {{amount_usd: "{huge}", period: month}}}}
      overall: {{budget: {{amount_usd: "{huge}", period: month}}}}
projects:
  bench-project: {{budget: {{amount_usd: "{huge}", period: month}}}}
teams:
  bench-team-a: {{budget: {{amount_usd: "{huge}", period: month}}}}
  bench-team-b: {{budget: {{amount_usd: "{huge}", period: month}}}}
organisation:
  budget: {{amount_usd: "{huge}", period: month, soft_limits_percent: [80, 100]}}
attribution:
  header: {attribution_header}
pricing:
  default_max_output_tokens: 1024
"""
HUGE_USD = 100_000_000
"""Per limit; 1e14 micro-USD stays exact in Lua's doubles (below 2**53)."""


def policy_text() -> str:
    """The benchmark's policy for the tenant ``TENANT``."""
    directory = "\n".join(
        f"  {identity}: {{team: bench-team-{'a' if n < 4 else 'b'}, "
        "project: bench-project}"
        for n, identity in enumerate(payloads.IDENTITIES)
    )

    return POLICY.format(
        tenant=TENANT,
        identity_header=payloads.IDENTITY_HEADER,
        credential_env=payloads.GATEWAY_CREDENTIAL_ENV,
        directory=directory,
        huge=HUGE_USD,
        tool_header=payloads.TOOL_HEADER,
        tool=payloads.TOOL,
        attribution_header=payloads.ATTRIBUTION_HEADER,
    )


@dataclass
class Gateway:
    """One setup under test: an Envoy and, unless the floor, its ext_proc."""

    name: str
    envoy: EnvoyProcess
    extproc_pid: int | None = None
    redis: RedisProcess | None = None
    more_extproc_pids: list[int] = field(default_factory=list)
    """Further Tollgate processes behind the same Envoy (``--processes``)."""

    @property
    def extproc_pids(self) -> list[int]:
        first = [] if self.extproc_pid is None else [self.extproc_pid]
        return first + self.more_extproc_pids

    @property
    def port(self) -> int:
        return self.envoy.listen_port

    @property
    def envoy_pid(self) -> int:
        pid = self.envoy.pid
        assert pid is not None
        return pid

    def pids(self) -> list[int]:
        """Every long-lived process of this setup."""
        pids = [self.envoy_pid, *self.extproc_pids]
        if self.redis is not None:
            client = redis.Redis.from_url(self.redis.url)
            try:
                pids.append(int(client.info("server")["process_id"]))
            finally:
                client.close()

        return pids


@dataclass
class Topology:
    """Everything that runs during one benchmark."""

    provider: EnvoyProcess
    sse_provider: Child
    otlp_sink: Child | None = None
    gateways: dict[str, Gateway] = field(default_factory=dict)

    def pids(self) -> list[int]:
        """Every long-lived process the benchmark started."""
        pids = [self.provider.pid or 0, self.sse_provider.pid]
        if self.otlp_sink is not None:
            pids.append(self.otlp_sink.pid)
        for gateway in self.gateways.values():
            pids += gateway.pids()

        return [pid for pid in pids if pid]


@contextlib.contextmanager
def started(
    workdir: Path,
    setups: tuple[str, ...],
    *,
    envoy_concurrency: int,
    event_delay_ms: float,
    tollgate_settings: dict[str, str],
    telemetry: bool,
    policy: str | None = None,
    processes: int = 1,
) -> Iterator[Topology]:
    """Start the providers and each of ``setups``; stop all of them after.

    ``telemetry``: Tollgate exports traces and metrics over OTLP to a
    stand-in collector (else the OpenTelemetry SDK is disabled). ``policy``
    replaces the benchmark's own policy text for Tollgate. ``processes``
    Tollgate servers share the full setup's load, each with its own port
    and journal; its Envoy spreads requests over them.
    """
    with contextlib.ExitStack() as stack:
        provider = stack.enter_context(
            EnvoyProcess(provider_config(), workdir / "provider", concurrency=1)
        )
        sse_port = free_port()
        sse_provider = stack.enter_context(
            Child(
                "sse_provider",
                ["--port", str(sse_port), "--event-delay-ms", str(event_delay_ms)],
                port=sse_port,
                log_path=workdir / "sse_provider.log",
            )
        )
        topology = Topology(provider, sse_provider)
        tollgate_env = {payloads.GATEWAY_CREDENTIAL_ENV: payloads.GATEWAY_CREDENTIAL}
        collector = None
        if telemetry:
            sink_port = free_port()
            topology.otlp_sink = stack.enter_context(
                Child(
                    "otlp_sink",
                    ["--port", str(sink_port)],
                    port=sink_port,
                    log_path=workdir / "otlp_sink.log",
                )
            )
            tollgate_env.update(otlp_environment(sink_port))
            collector = f"127.0.0.1:{sink_port}"
        else:
            tollgate_env["OTEL_SDK_DISABLED"] = "true"

        for name in setups:
            gateway_dir = workdir / name
            extproc_addresses, extproc_pids, redis = _start_extproc(
                stack,
                name,
                gateway_dir,
                tollgate_settings,
                tollgate_env,
                policy,
                processes,
            )
            config = gateway_config(
                provider.listen_port,
                sse_port,
                extproc_addresses,
                gateway_dir,
                collector=collector,
                split=name == SPLIT,
            )
            envoy = stack.enter_context(
                EnvoyProcess(
                    config, gateway_dir / "envoy", concurrency=envoy_concurrency
                )
            )
            first, *more = extproc_pids or [None]
            topology.gateways[name] = Gateway(name, envoy, first, redis, more)
            log.info("%s gateway live on port %d", name, envoy.listen_port)

        yield topology


def otlp_environment(port: int) -> dict[str, str]:
    """The standard variables that send traces and metrics to ``port``.

    Metrics every 10 s rather than the SDK's 60 s, so that a short run
    exports them too.
    """
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_METRIC_EXPORT_INTERVAL": "10000",
    }


def _start_extproc(
    stack: contextlib.ExitStack,
    name: str,
    workdir: Path,
    settings: dict[str, str],
    env: dict[str, str],
    policy: str | None,
    processes: int = 1,
) -> tuple[list[str] | None, list[int], RedisProcess | None]:
    if name == FLOOR:
        return None, [], None

    if name in (NOOP, SPLIT):
        port = free_port()
        noop = stack.enter_context(
            Child(
                "noop_extproc",
                ["--listen", f"127.0.0.1:{port}"],
                port=port,
                log_path=workdir / "noop_extproc.log",
            )
        )
        return [f"127.0.0.1:{port}"], [noop.pid], None

    redis = stack.enter_context(RedisProcess(workdir=workdir / "redis"))
    policy_path = workdir / "policy.yaml"
    policy_path.parent.mkdir(parents=True, exist_ok=True)
    policy_path.write_text(policy or policy_text())
    servers = [
        stack.enter_context(
            ExtprocProcess(
                # Each in its own folder: its own log and local journal.
                workdir / ("extproc" if n == 0 else f"extproc-{n}"),
                env=env,
                settings={
                    "policy_file": str(policy_path),
                    "redis_url": redis.url,
                    "log_level": "WARNING",
                    **settings,
                },
            )
        )
        for n in range(processes)
    ]

    return [s.address for s in servers], [tollgate_pid(s) for s in servers], redis


def tollgate_pid(tollgate: ExtprocProcess) -> int:
    """The pid of ``tollgate serve``.

    ExtprocProcess does not expose it; its child is the server itself
    (``python -m extproc serve``, no wrapper), so the Popen's pid is it.
    """
    process = getattr(tollgate, "_process", None)
    if process is None:
        raise RuntimeError("ExtprocProcess no longer keeps its Popen in _process")

    return int(process.pid)


def gateway_config(
    provider_port: int,
    sse_port: int,
    extproc_address: str | list[str] | None,
    workdir: Path,
    *,
    collector: str | None = None,
    split: bool = False,
) -> dict[str, Any]:
    """The local bootstrap for one setup; no ext_proc filter when the address
    is None; with ``split``, the ext_proc filter cut in two (``split_filters``).

    Envoy's own tracing (when the bootstrap has it) goes to ``collector``
    (``host:port``), and is taken out when that is None, so that every
    setup, the floor included, traces alike.
    """
    config = render_local_config(
        listen_port=0,
        admin_port=0,
        extproc_address=extproc_address or "127.0.0.1:9",
        upstreams={
            name: ("127.0.0.1", provider_port, False) for name in PROVIDER_CLUSTERS
        },
        access_log_path=str(workdir / "access.log"),
    )
    resources = config["static_resources"]
    manager = _connection_manager(resources["listeners"][0])

    resources["clusters"].append(_sse_cluster(sse_port))
    [providers] = [
        host
        for host in manager["route_config"]["virtual_hosts"]
        if host["name"] == "providers"
    ]
    routes = providers["routes"]
    routes.insert(0, _stream_route())
    _point_tracing(resources, manager, collector)
    if split:
        manager["http_filters"] = split_filters(manager["http_filters"])
    if extproc_address is None:
        manager["http_filters"] = [
            f for f in manager["http_filters"] if f["name"] != EXTPROC_FILTER
        ]
        resources["clusters"] = [
            c for c in resources["clusters"] if c["name"] != "tollgate_extproc"
        ]

    return config


def _point_tracing(
    resources: dict[str, Any], manager: dict[str, Any], collector: str | None
) -> None:
    clusters = [c for c in resources["clusters"] if c["name"] == COLLECTOR_CLUSTER]
    if collector is None:
        manager.pop("tracing", None)
        resources["clusters"] = [
            c for c in resources["clusters"] if c["name"] != COLLECTOR_CLUSTER
        ]
        return
    host, _, port = collector.rpartition(":")
    for cluster in clusters:
        endpoint = {"socket_address": {"address": host, "port_value": int(port)}}
        cluster["type"] = "STATIC"
        cluster["load_assignment"]["endpoints"] = [
            {"lb_endpoints": [{"endpoint": {"address": endpoint}}]}
        ]


def split_filters(filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ext_proc filter as two, the second design of ENVOY-NOTES.md.

    A gate that Envoy waits for (request headers and the buffered request
    body, nothing of the response), then a metering filter in observability
    mode (response headers and the streamed response body, sent without
    waiting for answers). Both talk to the same server.
    """
    result: list[dict[str, Any]] = []
    for http_filter in filters:
        if http_filter["name"] != EXTPROC_FILTER:
            result.append(http_filter)
            continue
        gate = copy.deepcopy(http_filter)
        gate["typed_config"]["processing_mode"].update(
            response_header_mode="SKIP", response_body_mode="NONE"
        )
        meter = copy.deepcopy(http_filter)
        meter["name"] = "tollgate.meter"
        # The route config turns on the filter by its name only; the meter
        # runs wherever the gate does.
        meter.pop("disabled", None)
        meter["typed_config"]["observability_mode"] = True
        meter["typed_config"].pop("allow_mode_override", None)
        meter["typed_config"]["processing_mode"].update(
            request_header_mode="SKIP", request_body_mode="NONE"
        )
        result += [gate, meter]

    return result


def provider_config() -> dict[str, Any]:
    """An Envoy that answers every request with ``payloads.completion_body()``.

    Its listener is named like the gateway's because ``EnvoyProcess`` finds
    the bound port of a listener by that name.
    """
    route = {
        "match": {"prefix": "/"},
        "direct_response": {
            "status": 200,
            "body": {"inline_string": payloads.completion_body().decode()},
        },
        "response_headers_to_add": [
            {
                "header": {"key": "content-type", "value": "application/json"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ],
    }
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "provider",
        "codec_type": "AUTO",
        "route_config": {
            "name": "provider",
            "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http."
                    "router.v3.Router"
                },
            }
        ],
    }
    listener = {
        "name": "tollgate_egress",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [{"name": HCM, "typed_config": manager}]}],
    }

    return {
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}
        },
        "static_resources": {"listeners": [listener]},
    }


def _sse_cluster(port: int) -> dict[str, Any]:
    endpoint = {
        "endpoint": {
            "address": {
                "socket_address": {
                    "address": "127.0.0.1",
                    "port_value": port,
                }
            }
        }
    }
    return {
        "name": SSE_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": SSE_CLUSTER,
            "endpoints": [{"lb_endpoints": [endpoint]}],
        },
    }


def _stream_route() -> dict[str, Any]:
    # The same rewrites and timeouts as the committed openai route; only the
    # cluster differs.
    return {
        "name": "openai_stream",
        "match": {
            "prefix": "/openai/",
            "headers": [{"name": payloads.STREAM_ROUTE_HEADER, "present_match": True}],
        },
        "route": {
            "cluster": SSE_CLUSTER,
            "prefix_rewrite": "/",
            "host_rewrite_literal": "api.openai.com",
            "timeout": "0s",
            "idle_timeout": "600s",
        },
    }


def _connection_manager(listener: dict[str, Any]) -> dict[str, Any]:
    for chain in listener["filter_chains"]:
        for network_filter in chain["filters"]:
            if network_filter["name"] == HCM:
                manager: dict[str, Any] = network_filter["typed_config"]
                return manager
    raise RuntimeError("the gateway listener has no http_connection_manager")
