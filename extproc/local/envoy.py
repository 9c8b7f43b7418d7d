"""Render the committed Envoy bootstraps and run Envoy as a child process.

``render_local_config`` turns ``envoy/local.yaml`` into a config for one run
(ports, ext_proc address, provider endpoints, access log);
``render_egress_config`` does the same for the egress gateway's
``envoy/egress.yaml``, keeping its provider TLS settings and pointing only
the endpoints, the CA bundle and the JWKS file elsewhere. ``EnvoyProcess``
runs such a config until the ``with`` block ends.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import logging
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from extproc.errors import ConfigError
from extproc.local import _process
from extproc.local.binaries import envoy_binary

logger = logging.getLogger(__name__)

ENVOY_DIR = Path(__file__).resolve().parents[2] / "envoy"
LOCAL_CONFIG_PATH = ENVOY_DIR / "local.yaml"
"""The committed bootstrap; only present in a source checkout, by design."""
EGRESS_CONFIG_PATH = ENVOY_DIR / "egress.yaml"
"""The egress gateway's bootstrap (k8s/base ships a copy); source tree only."""

LISTENER_NAME = "tollgate_egress"
HEALTH_LISTENER_NAME = "tollgate_health"
EXTPROC_CLUSTER = "tollgate_extproc"
COLLECTOR_CLUSTER = "otel_collector"
ADMIN_CLUSTER = "envoy_admin"
JWT_FILTER = "envoy.filters.http.jwt_authn"
JWT_PROVIDER = "workload"
TLS_SOCKET = "envoy.transport_sockets.tls"
STDOUT_LOGGER = "envoy.access_loggers.stdout"
FILE_LOGGER = "envoy.access_loggers.file"
FILE_LOG_TYPE = (
    "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
)

Upstream = tuple[str, int, bool]
"""A provider endpoint: (host, port, tls)."""


def render_local_config(
    *,
    listen_port: int,
    admin_port: int,
    extproc_address: str | list[str],
    upstreams: dict[str, Upstream] | None = None,
    access_log_path: str | None = None,
    collector_address: str | None = None,
    template_path: Path = LOCAL_CONFIG_PATH,
) -> dict[str, Any]:
    """Return the local bootstrap patched for one run, as a fresh dict.

    - ``listen_port`` and ``admin_port``: ports on 127.0.0.1; 0 lets Envoy
      choose (``EnvoyProcess`` finds out which).
    - ``extproc_address``: ``host:port`` (``[v6]:port`` for IPv6) or
      ``unix:/path`` of the ext_proc gRPC server, or a list of them for
      several server processes (Envoy spreads requests over them).
    - ``upstreams``: provider cluster name -> ``(host, port, tls)``. With TLS
      the SNI and the required certificate name become ``host``. Without TLS
      the transport socket is dropped and the cluster becomes STATIC (or
      LOGICAL_DNS when ``host`` is a name rather than an IP literal). The
      routes' host rewrite is kept, so a stand-in sees the provider's Host.
    - ``access_log_path``: write the JSON access log to this file instead of
      stdout.
    - ``collector_address``: ``host:port`` of the OTLP/gRPC collector that
      receives Envoy's spans (default 127.0.0.1:4317).

    Raises ``ConfigError`` when the template is missing (it ships with the
    source tree, not the package) or an argument names nothing in it.
    """
    config = _load_template(template_path)
    resources = config["static_resources"]
    listener = _named(resources["listeners"], LISTENER_NAME, "listener")
    clusters = resources["clusters"]

    _set_port(config["admin"]["address"], admin_port)
    _set_port(listener["address"], listen_port)
    _point_grpc(_named(clusters, EXTPROC_CLUSTER, "cluster"), extproc_address)
    for name, (host, port, tls) in (upstreams or {}).items():
        _point_upstream(_named(clusters, name, "cluster"), host, port, tls)
    if access_log_path is not None:
        _log_to_file(_connection_manager(listener), access_log_path)
    if collector_address is not None:
        _point_grpc(_named(clusters, COLLECTOR_CLUSTER, "cluster"), collector_address)

    return config


def render_egress_config(
    *,
    listen_port: int,
    health_port: int,
    admin_port: int,
    extproc_address: str,
    upstreams: dict[str, tuple[str, int]] | None = None,
    trusted_ca_path: str | None = None,
    jwks_path: str | None = None,
    access_log_path: str | None = None,
    template_path: Path = EGRESS_CONFIG_PATH,
) -> dict[str, Any]:
    """Return the egress gateway bootstrap patched for one run, as a fresh dict.

    - ``listen_port``, ``health_port``: the egress and the probe listener,
      bound to 127.0.0.1 (the file binds 0.0.0.0, for a pod); 0 lets Envoy
      choose for the egress listener.
    - ``admin_port``: a concrete port, because the probe listener's metrics
      route points at it.
    - ``extproc_address``: ``unix:/path`` (as in the pod) or ``host:port``.
    - ``upstreams``: provider cluster name -> ``(address, port)``. Only the
      endpoint changes: TLS stays on, with the file's SNI and required
      certificate name, so a test server must present a certificate for the
      provider's real name.
    - ``trusted_ca_path``: the CA bundle every provider cluster trusts instead
      of the system one.
    - ``jwks_path``: the JWKS file the JWT filter verifies tokens with,
      instead of the one mounted in the pod.
    - ``access_log_path``: write the JSON access log to this file.

    Raises ``ConfigError`` when the template is missing or an argument names
    nothing in it.
    """
    if admin_port <= 0:
        raise ConfigError(
            "admin_port must be a concrete port: /stats/prometheus points at it"
        )
    config = _load_template(template_path)
    resources = config["static_resources"]
    listener = _named(resources["listeners"], LISTENER_NAME, "listener")
    health = _named(resources["listeners"], HEALTH_LISTENER_NAME, "listener")
    clusters = resources["clusters"]

    _set_port(config["admin"]["address"], admin_port)
    _bind_loopback(listener, listen_port)
    _bind_loopback(health, health_port)
    _set_endpoint(
        _named(clusters, ADMIN_CLUSTER, "cluster"),
        {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}},
    )
    _point_grpc(_named(clusters, EXTPROC_CLUSTER, "cluster"), extproc_address)
    for name, (host, port) in (upstreams or {}).items():
        _point_tls_upstream(_named(clusters, name, "cluster"), host, port)
    if trusted_ca_path is not None:
        for cluster in clusters:
            _trust_ca(cluster, trusted_ca_path)
    if jwks_path is not None:
        jwt_provider = _jwt_provider(_connection_manager(listener))
        jwt_provider["local_jwks"] = {"filename": jwks_path}
    if access_log_path is not None:
        _log_to_file(_connection_manager(listener), access_log_path)

    return config


class EnvoyProcess(_process.Child):
    """Run Envoy with ``config`` inside ``workdir`` for the life of a block.

    On enter: writes ``workdir/envoy.yaml``, starts Envoy and returns once the
    admin ``/ready`` endpoint says ``LIVE``; raises ``ConfigError`` with the
    tail of Envoy's log if it exits or is not live within
    ``ready_timeout_s``. On exit: SIGTERM, then SIGKILL after
    ``stop_timeout_s``.

    Envoy's own log is ``log_path``; the access log is ``access_log_path``
    (the configured file, or the captured stdout for the stdout logger).
    """

    def __init__(
        self,
        config: dict[str, Any],
        workdir: Path,
        *,
        concurrency: int = 1,
        binary: Path | None = None,
        ready_timeout_s: float = 20.0,
        stop_timeout_s: float = 5.0,
    ) -> None:
        self.config = copy.deepcopy(config)
        self.workdir = Path(workdir)
        self.concurrency = concurrency
        self.binary = binary
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.config_path = self.workdir / "envoy.yaml"
        self.log_path = self.workdir / "envoy.log"
        self.stdout_path = self.workdir / "envoy.stdout.log"
        self.admin_address_path = self.workdir / "envoy.admin-address"
        self._process: subprocess.Popen[bytes] | None = None
        self._admin_port: int | None = None
        self._listen_port: int | None = None

    @property
    def listen_port(self) -> int:
        """The port of the egress listener (as bound, when configured as 0)."""
        if self._listen_port is None:
            raise RuntimeError("Envoy is not running")
        return self._listen_port

    @property
    def admin_port(self) -> int:
        """The port of the admin interface (as bound, when configured as 0)."""
        if self._admin_port is None:
            raise RuntimeError("Envoy is not running")
        return self._admin_port

    @property
    def url(self) -> str:
        """Base URL of the egress listener, for example ``http://127.0.0.1:P``."""
        return f"http://127.0.0.1:{self.listen_port}"

    @property
    def access_log_path(self) -> Path:
        """The file the HTTP access log lands in."""
        configured = _file_log_path(self.config)
        return Path(configured) if configured else self.stdout_path

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> None:
        """Start Envoy and wait until it is live; see the class docstring."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.admin_address_path.unlink(missing_ok=True)

        argv = self._argv(self.binary or envoy_binary())
        self._process = _process.spawn(
            argv, self.log_path, cwd=self.workdir, stdout_path=self.stdout_path
        )
        try:
            self._wait_until_live()
        except BaseException:
            self.stop()
            raise

        logger.info(
            "envoy live pid=%d listen_port=%d admin_port=%d",
            self._process.pid,
            self.listen_port,
            self.admin_port,
        )

    def stop(self) -> None:
        """Terminate Envoy if it runs; idempotent."""
        if self._process is None:
            return
        code = _process.terminate(self._process, timeout_s=self.stop_timeout_s)
        logger.debug("envoy stopped pid=%d code=%s", self._process.pid, code)
        self._process = None
        self._admin_port = None
        self._listen_port = None

    def admin_get(self, path: str, *, timeout_s: float = 2.0) -> str:
        """GET ``path`` (for example ``/stats?filter=ext_proc``) from the admin."""
        url = f"http://127.0.0.1:{self.admin_port}{path}"
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            body: bytes = response.read()

        return body.decode("utf-8", errors="replace")

    def _argv(self, binary: Path) -> list[str]:
        # --disable-hot-restart: no shared-memory region and no domain socket
        # keyed by base id, so any number of Envoys can run side by side
        # (tests, a demo next to a real run) without picking base ids.
        return [
            str(binary),
            "--config-path",
            str(self.config_path),
            "--concurrency",
            str(self.concurrency),
            "--log-level",
            "warning",
            "--disable-hot-restart",
            "--admin-address-path",
            str(self.admin_address_path),
            # The access log is flushed on this interval (default 10 s);
            # short, so that a finished request shows in the log at once.
            "--file-flush-interval-msec",
            "100",
        ]

    def _wait_until_live(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s

        while time.monotonic() < deadline:
            self._fail_if_exited()
            # Re-read until live: the file has no terminator, so a read may
            # race Envoy's write and see a partial port.
            self._admin_port = _read_admin_port(self.admin_address_path)
            if self._admin_port is not None and self._is_live():
                self._listen_port = self._bound_listen_port()
                return
            time.sleep(0.05)

        raise ConfigError(
            f"Envoy was not live after {self.ready_timeout_s}s; "
            f"last lines of {self.log_path}:\n{_process.log_tail(self.log_path)}"
        )

    def _fail_if_exited(self) -> None:
        assert self._process is not None
        code = self._process.poll()
        if code is not None:
            raise ConfigError(
                f"Envoy exited with code {code} while starting; "
                f"last lines of {self.log_path}:\n{_process.log_tail(self.log_path)}"
            )

    def _is_live(self) -> bool:
        # /ready answers 503 with the state name until the server (clusters
        # warmed, listeners bound, first health checks done) is LIVE.
        try:
            body = self.admin_get("/ready", timeout_s=0.5)
        except (urllib.error.URLError, OSError):
            return False

        return body.strip() == "LIVE"

    def _bound_listen_port(self) -> int:
        configured = _listener_port(self.config)
        if configured:
            return configured

        statuses = json.loads(self.admin_get("/listeners?format=json"))
        for status in statuses.get("listener_statuses", []):
            if status.get("name") == LISTENER_NAME:
                return int(status["local_address"]["socket_address"]["port_value"])
        raise ConfigError(f"Envoy reports no listener named {LISTENER_NAME}")


def _load_template(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise ConfigError(
            f"Envoy bootstrap template {path} is missing: the local tooling "
            "runs from a source checkout of Tollgate, which has envoy/local.yaml"
        ) from error

    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"Envoy bootstrap template {path} is not YAML") from error
    if not isinstance(loaded, dict):
        raise ConfigError(f"Envoy bootstrap template {path} is not a mapping")

    # YAML anchors load as shared objects; a JSON round trip gives every
    # cluster and route its own copy, so patching one never patches another.
    unshared: dict[str, Any] = json.loads(json.dumps(loaded))
    return unshared


def _named(items: list[dict[str, Any]], name: str, kind: str) -> dict[str, Any]:
    for item in items:
        if item.get("name") == name:
            return item
    known = ", ".join(str(item.get("name")) for item in items)
    raise ConfigError(f"the Envoy template has no {kind} {name!r} (has: {known})")


def _set_port(address: dict[str, Any], port: int) -> None:
    if not 0 <= port <= 65535:
        raise ConfigError(f"port {port} is out of range")
    address["socket_address"]["port_value"] = port


def _point_grpc(cluster: dict[str, Any], extproc_address: str | list[str]) -> None:
    """Point a gRPC cluster at one address, or at several processes: Envoy
    spreads the streams (one per request) over them, round robin."""
    addresses = (
        [extproc_address] if isinstance(extproc_address, str) else extproc_address
    )
    if not addresses:
        raise ConfigError("no ext_proc address given")
    endpoints = [_grpc_endpoint(address) for address in addresses]
    cluster["load_assignment"]["endpoints"] = [
        {"lb_endpoints": [{"endpoint": {"address": e}} for e in endpoints]}
    ]
    names = [
        e["socket_address"]["address"]
        for e in endpoints
        if "socket_address" in e and not _is_ip(e["socket_address"]["address"])
    ]
    if not names:
        cluster["type"] = "STATIC"
    else:
        cluster["type"] = "LOGICAL_DNS" if len(endpoints) == 1 else "STRICT_DNS"


def _grpc_endpoint(address: str) -> dict[str, Any]:
    if address.startswith("unix:"):
        path = address.removeprefix("unix:")
        if not path:
            raise ConfigError("ext_proc address 'unix:' names no socket path")
        return {"pipe": {"path": path}}

    host, port = _split_host_port(address)
    return {"socket_address": {"address": host, "port_value": port}}


def _point_upstream(cluster: dict[str, Any], host: str, port: int, tls: bool) -> None:
    _set_endpoint(cluster, {"socket_address": {"address": host, "port_value": port}})

    if tls:
        if _is_ip(host):
            raise ConfigError(
                f"TLS upstream {host} for cluster {cluster['name']} must be a DNS "
                "name: it becomes the SNI and the required certificate name"
            )
        tls_context = cluster["transport_socket"]["typed_config"]
        tls_context["sni"] = host
        validation = tls_context["common_tls_context"]["validation_context"]
        validation["match_typed_subject_alt_names"] = [
            {"san_type": "DNS", "matcher": {"exact": host}}
        ]
        return

    cluster.pop("transport_socket", None)
    if _is_ip(host):
        cluster["type"] = "STATIC"
        cluster.pop("dns_lookup_family", None)
    else:
        cluster["type"] = "LOGICAL_DNS"


def _bind_loopback(listener: dict[str, Any], port: int) -> None:
    _set_port(listener["address"], port)
    listener["address"]["socket_address"]["address"] = "127.0.0.1"


def _point_tls_upstream(cluster: dict[str, Any], host: str, port: int) -> None:
    if cluster.get("transport_socket", {}).get("name") != TLS_SOCKET:
        raise ConfigError(f"cluster {cluster['name']} has no TLS transport socket")
    _set_endpoint(cluster, {"socket_address": {"address": host, "port_value": port}})
    if _is_ip(host):
        cluster["type"] = "STATIC"
        cluster.pop("dns_lookup_family", None)
        cluster.pop("respect_dns_ttl", None)


def _trust_ca(cluster: dict[str, Any], path: str) -> None:
    socket = cluster.get("transport_socket", {})
    if socket.get("name") != TLS_SOCKET:
        return
    validation = socket["typed_config"]["common_tls_context"]["validation_context"]
    validation["trusted_ca"] = {"filename": path}


def _jwt_provider(manager: dict[str, Any]) -> dict[str, Any]:
    jwt_filter = _named(manager.get("http_filters", []), JWT_FILTER, "HTTP filter")
    provider: dict[str, Any] = jwt_filter["typed_config"]["providers"][JWT_PROVIDER]
    return provider


def _set_endpoint(cluster: dict[str, Any], address: dict[str, Any]) -> None:
    endpoint = {"endpoint": {"address": address}}
    cluster["load_assignment"]["endpoints"] = [{"lb_endpoints": [endpoint]}]


def _split_host_port(address: str) -> tuple[str, int]:
    host, separator, port_text = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not separator or not host or not port_text.isdigit():
        raise ConfigError(
            f"ext_proc address {address!r} is neither host:port nor unix:/path"
        )

    return host, int(port_text)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False

    return True


def _connection_manager(listener: dict[str, Any]) -> dict[str, Any]:
    for chain in listener["filter_chains"]:
        for network_filter in chain["filters"]:
            if (
                network_filter["name"]
                == "envoy.filters.network.http_connection_manager"
            ):
                manager: dict[str, Any] = network_filter["typed_config"]
                return manager
    raise ConfigError(f"listener {LISTENER_NAME} has no http_connection_manager")


def _log_to_file(manager: dict[str, Any], path: str) -> None:
    loggers = manager.get("access_log", [])
    stdout_logger = _named(loggers, STDOUT_LOGGER, "access logger")
    stdout_logger["name"] = FILE_LOGGER
    stdout_logger["typed_config"] = {
        "@type": FILE_LOG_TYPE,
        "path": path,
        "log_format": stdout_logger["typed_config"]["log_format"],
    }


def _file_log_path(config: dict[str, Any]) -> str | None:
    listener = _named(
        config["static_resources"]["listeners"], LISTENER_NAME, "listener"
    )
    for access_logger in _connection_manager(listener).get("access_log", []):
        if access_logger.get("name") == FILE_LOGGER:
            path: str = access_logger["typed_config"]["path"]
            return path

    return None


def _listener_port(config: dict[str, Any]) -> int:
    listener = _named(
        config["static_resources"]["listeners"], LISTENER_NAME, "listener"
    )
    port: int = listener["address"]["socket_address"]["port_value"]

    return port


def _read_admin_port(path: Path) -> int | None:
    # Envoy writes "host:port" of the bound admin socket once it listens.
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    _, _, port_text = text.rpartition(":")

    return int(port_text) if port_text.isdigit() else None
