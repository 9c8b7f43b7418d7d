"""The Envoy configs in envoy/ (and the one Istio builds from the EnvoyFilter)
are valid for the real Envoy, and say what the deployment relies on."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from extproc.local import EGRESS_CONFIG_PATH
from extproc.policy import load_policy
from tests.deploy.envoy_validate import validate, walk

ROOT = Path(__file__).resolve().parents[2]
ENVOY_CONFIGS = sorted((ROOT / "envoy").glob("*.yaml"))
K8S_ENVOY_COPY = ROOT / "k8s" / "base" / "envoy.yaml"
K8S_POLICY = ROOT / "k8s" / "base" / "policy.yaml"
ENVOY_FILTER = ROOT / "k8s" / "overlays" / "istio" / "envoyfilter.yaml"

POD_JWKS = "/etc/tollgate/jwks/jwks.json"
SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"
SOCKET = "/var/run/tollgate/extproc.sock"
IDENTITY_HEADER = "x-tollgate-identity"
METADATA_KEYS = ("request_id", "identity", "decision", "cost_micro_usd", "outcome")
HCM = "envoy.filters.network.http_connection_manager"
EXT_PROC = "envoy.filters.http.ext_proc"
JWT = "envoy.filters.http.jwt_authn"
ROUTER = "envoy.filters.http.router"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
EXT_PROC_PER_ROUTE_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute"
)
TLS = "envoy.transport_sockets.tls"
MIB = 1024 * 1024


def _load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(json.dumps(yaml.safe_load(path.read_text())))
    return loaded


def _named(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(item for item in items if item.get("name") == name)


def _egress() -> dict[str, Any]:
    return _load(EGRESS_CONFIG_PATH)


def _manager(
    config: dict[str, Any], listener: str = "tollgate_egress"
) -> dict[str, Any]:
    found = _named(config["static_resources"]["listeners"], listener)
    manager: dict[str, Any] = _named(found["filter_chains"][0]["filters"], HCM)[
        "typed_config"
    ]
    return manager


def _filter_names(manager: dict[str, Any]) -> list[str]:
    return [item["name"] for item in manager["http_filters"]]


def _provider_clusters(config: dict[str, Any]) -> list[dict[str, Any]]:
    clusters = config["static_resources"]["clusters"]
    return [c for c in clusters if c.get("transport_socket", {}).get("name") == TLS]


def _routes(config: dict[str, Any]) -> list[dict[str, Any]]:
    [virtual_host] = _manager(config)["route_config"]["virtual_hosts"]
    routes: list[dict[str, Any]] = virtual_host["routes"]
    return routes


def _envoy_filter_patches() -> list[dict[str, Any]]:
    patches: list[dict[str, Any]] = _load(ENVOY_FILTER)["spec"]["configPatches"]
    return patches


@pytest.fixture(scope="module")
def jwks_stand_in(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.deploy.pki import TokenSigner

    return TokenSigner(tmp_path_factory.mktemp("jwks")).jwks_path


@pytest.mark.parametrize("path", ENVOY_CONFIGS, ids=lambda p: p.name)
def test_envoy_accepts_the_committed_config(
    path: Path, jwks_stand_in: Path, tmp_path: Path
) -> None:
    replaced = validate(_load(path), tmp_path, {POD_JWKS: jwks_stand_in})

    # Only the JWKS, which exists only in the pod, was moved.
    assert set(replaced) <= {POD_JWKS}


def test_configs_are_checked_at_all() -> None:
    assert {"local.yaml", "egress.yaml"} <= {path.name for path in ENVOY_CONFIGS}


def test_validation_fails_for_a_broken_config(
    jwks_stand_in: Path, tmp_path: Path
) -> None:
    config = _egress()
    _manager(config)["http_filters"][1]["typed_config"]["processing_mode"][
        "request_body_mode"
    ] = "BUFFERED_PLEASE"

    with pytest.raises(AssertionError, match="envoy rejected"):
        validate(config, tmp_path, {POD_JWKS: jwks_stand_in})


def test_kubernetes_base_ships_the_egress_config_unchanged() -> None:
    assert EGRESS_CONFIG_PATH.read_text() == K8S_ENVOY_COPY.read_text()


def test_every_provider_cluster_verifies_the_providers_certificate() -> None:
    clusters = _provider_clusters(_egress())

    assert 6 == len(clusters)
    for cluster in clusters:
        [host] = [
            lb["endpoint"]["address"]["socket_address"]["address"]
            for group in cluster["load_assignment"]["endpoints"]
            for lb in group["lb_endpoints"]
        ]
        tls = cluster["transport_socket"]["typed_config"]
        validation = tls["common_tls_context"]["validation_context"]
        options = cluster["typed_extension_protocol_options"][
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        ]
        assert host == tls["sni"], cluster["name"]
        assert [{"san_type": "DNS", "matcher": {"exact": host}}] == validation[
            "match_typed_subject_alt_names"
        ]
        assert {"filename": SYSTEM_CA} == validation["trusted_ca"]
        assert options["upstream_http_protocol_options"]["auto_sni"] is False


def test_provider_routes_never_time_out_a_stream_and_never_retry() -> None:
    routed = [r for r in _routes(_egress()) if "route" in r]

    assert 12 == len(routed)
    for route in routed:
        assert "0s" == route["route"]["timeout"], route["name"]
        assert "idle_timeout" in route["route"]
        assert "retry_policy" not in route["route"]


def test_routes_agree_with_the_policy_on_every_prefix_and_host() -> None:
    # Envoy picks the cluster and Tollgate the credential: for every provider
    # in the shipped policy, its prefix and its hosts must reach its cluster,
    # prefixes before hosts (Tollgate's own order).
    policy = load_policy(K8S_POLICY)
    routes = _routes(_egress())
    sni = {
        c["name"]: c["transport_socket"]["typed_config"]["sni"]
        for c in _provider_clusters(_egress())
    }
    first_host_route = next(i for i, r in enumerate(routes) if "headers" in r["match"])

    for name, provider in policy.providers.items():
        by_prefix = [
            i
            for i, r in enumerate(routes)
            if r["match"].get("path_separated_prefix") == provider.route_prefix
        ]
        by_host = [
            i
            for i, r in enumerate(routes)
            for header in r["match"].get("headers", [])
            if header["string_match"]["exact"] in provider.hosts
        ]
        assert 1 == len(by_prefix), name
        assert len(provider.hosts) == len(by_host), name
        assert by_prefix[0] < first_host_route
        for index in by_prefix + by_host:
            action = routes[index]["route"]
            assert name == action["cluster"]
            assert sni[name] == action["host_rewrite_literal"]
            assert sni[name] in provider.hosts


def test_identity_header_is_dropped_early_and_set_only_from_a_verified_token() -> None:
    manager = _manager(_egress())
    early = manager["early_header_mutation_extensions"][0]["typed_config"]["mutations"]
    jwt = _named(manager["http_filters"], JWT)["typed_config"]
    [provider] = jwt["providers"].values()

    assert {"remove": IDENTITY_HEADER} in early
    assert [{"header_name": IDENTITY_HEADER, "claim_name": "sub"}] == provider[
        "claim_to_headers"
    ]
    assert provider["forward"] is False
    assert ["tollgate"] == provider["audiences"]
    assert {"filename": POD_JWKS} == provider["local_jwks"]
    assert [
        {"match": {"prefix": "/"}, "requires": {"provider_name": "workload"}}
    ] == jwt["rules"]
    assert [JWT, EXT_PROC, ROUTER] == _filter_names(manager)


def test_policy_reads_identity_from_the_header_envoy_sets() -> None:
    assert IDENTITY_HEADER == load_policy(K8S_POLICY).identity.header


def test_ext_proc_is_tollgates_and_fails_closed() -> None:
    ext_proc = _named(_manager(_egress())["http_filters"], EXT_PROC)["typed_config"]

    assert {
        "request_header_mode": "SEND",
        "response_header_mode": "SEND",
        "request_body_mode": "BUFFERED",
        "response_body_mode": "STREAMED",
        "request_trailer_mode": "SKIP",
        "response_trailer_mode": "SKIP",
    } == ext_proc["processing_mode"]
    assert ext_proc["allow_mode_override"] is True
    assert ext_proc["failure_mode_allow"] is False
    assert "2s" == ext_proc["message_timeout"]
    assert {"untyped": ["tollgate"]} == ext_proc["metadata_options"][
        "receiving_namespaces"
    ]
    assert ext_proc["mutation_rules"]["disallow_is_error"] is True
    assert "timeout" not in ext_proc["grpc_service"]


@pytest.mark.parametrize("path", ENVOY_CONFIGS, ids=lambda p: p.name)
def test_ext_proc_runs_for_every_routed_request_and_no_other(path: Path) -> None:
    # Envoy's answer to a request it cannot parse has no route; ext_proc must
    # not hold it (the connection closes under it). Every request that has a
    # route gets the filter with its own settings, and no virtual host or
    # route may turn it off or change it.
    manager = _manager(_load(path))
    routes = manager["route_config"]
    virtual_hosts = routes["virtual_hosts"]
    per_route = [*virtual_hosts, *(r for v in virtual_hosts for r in v["routes"])]

    assert _named(manager["http_filters"], EXT_PROC).get("disabled") is True
    assert {"@type": EXT_PROC_PER_ROUTE_TYPE, "overrides": {}} == routes[
        "typed_per_filter_config"
    ][EXT_PROC]
    for item in per_route:
        assert EXT_PROC not in item.get("typed_per_filter_config", {}), item["name"]


def test_ext_proc_cluster_is_the_shared_socket_with_grpc_health_checks() -> None:
    cluster = _named(_egress()["static_resources"]["clusters"], "tollgate_extproc")
    [endpoint] = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    [check] = cluster["health_checks"]

    assert {"pipe": {"path": SOCKET}} == endpoint["endpoint"]["address"]
    assert (
        "envoy.service.ext_proc.v3.ExternalProcessor"
        == check["grpc_health_check"]["service_name"]
    )
    assert (
        "http2_protocol_options"
        in cluster["typed_extension_protocol_options"][
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        ]["explicit_http_config"]
    )


def test_buffers_hold_long_prompts() -> None:
    listener = _named(_egress()["static_resources"]["listeners"], "tollgate_egress")

    assert listener["per_connection_buffer_limit_bytes"] >= 32 * MIB


def test_access_log_carries_tollgates_metadata() -> None:
    [logger] = _manager(_egress())["access_log"]
    fields = logger["typed_config"]["log_format"]["json_format"]

    for key in METADATA_KEYS:
        assert f"%DYNAMIC_METADATA(tollgate:{key})%" in fields.values(), key


def test_readiness_follows_the_ext_proc_clusters_health() -> None:
    manager = _manager(_egress(), "tollgate_health")
    health = _named(manager["http_filters"], "envoy.filters.http.health_check")[
        "typed_config"
    ]

    assert {"tollgate_extproc": {"value": 100}} == health[
        "cluster_min_healthy_percentages"
    ]


def test_admin_interface_listens_on_loopback_only() -> None:
    assert "127.0.0.1" == _egress()["admin"]["address"]["socket_address"]["address"]


# The Istio overlay: the EnvoyFilter's pieces are Tollgate's pieces.


def test_envoy_filter_inserts_the_same_ext_proc_filter_and_cluster() -> None:
    egress = _egress()
    patches = _envoy_filter_patches()
    inserted = next(p for p in patches if p["patch"]["value"].get("name") == EXT_PROC)
    added = next(p for p in patches if p["applyTo"] == "CLUSTER")

    # Istio writes the routes, so none can turn a disabled filter on there:
    # the inserted filter is on for every request (see its patch).
    assert {
        key: value
        for key, value in _named(_manager(egress)["http_filters"], EXT_PROC).items()
        if key != "disabled"
    } == inserted["patch"]["value"]
    assert "disabled" not in inserted["patch"]["value"]
    assert "INSERT_BEFORE" == inserted["patch"]["operation"]
    assert (
        ROUTER
        == inserted["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"]
    )
    assert (
        _named(egress["static_resources"]["clusters"], "tollgate_extproc")
        == added["patch"]["value"]
    )


def test_envoy_filter_patches_make_a_config_envoy_accepts(tmp_path: Path) -> None:
    # What Istio would build, reduced to what the patches touch: a listener
    # whose connection manager gets the merged settings and inserted filters,
    # and the added cluster. Envoy checks every typed config in it.
    patches = {
        (p["applyTo"], p["patch"]["operation"]): p["patch"]["value"]
        for p in _envoy_filter_patches()
    }
    manager: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "gateway",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [
                        {"match": {"prefix": "/"}, "direct_response": {"status": 404}}
                    ],
                }
            ]
        },
        "http_filters": [
            {
                "name": ROUTER,
                "typed_config": {"@type": ROUTER_TYPE},
            }
        ],
    }
    _merge(manager, patches[("NETWORK_FILTER", "MERGE")]["typed_config"])
    manager["http_filters"].insert(0, patches[("HTTP_FILTER", "INSERT_FIRST")])
    manager["http_filters"].insert(-1, patches[("HTTP_FILTER", "INSERT_BEFORE")])
    listener = {
        "name": "gateway",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 8443}},
        "filter_chains": [{"filters": [{"name": HCM, "typed_config": manager}]}],
    }
    _merge(listener, patches[("LISTENER", "MERGE")])
    config = {
        "static_resources": {
            "listeners": [listener],
            "clusters": [patches[("CLUSTER", "ADD")]],
        }
    }

    validate(config, tmp_path, {})

    assert [
        "tollgate.identity_from_peer_certificate",
        EXT_PROC,
        ROUTER,
    ] == _filter_names(manager)


def test_envoy_filter_sets_identity_from_the_peer_certificate_only() -> None:
    first = next(
        p for p in _envoy_filter_patches() if p["patch"]["operation"] == "INSERT_FIRST"
    )
    mutations = first["patch"]["value"]["typed_config"]["mutations"][
        "request_mutations"
    ]

    assert {"remove": IDENTITY_HEADER} == mutations[0]
    assert {"key": IDENTITY_HEADER, "value": "%DOWNSTREAM_PEER_URI_SAN%"} == mutations[
        1
    ]["append"]["header"]


def test_istio_gateway_tells_the_provider_nothing_of_the_callers_mesh() -> None:
    # An Istio gateway sets x-forwarded-client-cert (the caller's SPIFFE ID
    # and the gateway's own), appends the sidecar's address to
    # x-forwarded-for and names it in x-envoy-external-address; all of it
    # would travel on to the provider.
    first = next(
        p for p in _envoy_filter_patches() if p["patch"]["operation"] == "INSERT_FIRST"
    )
    mutations = first["patch"]["value"]["typed_config"]["mutations"][
        "request_mutations"
    ]
    removed = {m["remove"] for m in mutations if "remove" in m}

    assert {
        "x-forwarded-client-cert",
        "x-forwarded-for",
        "x-envoy-external-address",
    } <= removed


def test_no_config_holds_a_credential_looking_value() -> None:
    for path in [*ENVOY_CONFIGS, ENVOY_FILTER]:
        text = path.read_text()
        for marker in ("sk-", "AIza", "Bearer ey", "AKIA"):
            assert marker not in text.replace('value_prefix: "Bearer "', ""), (
                path,
                marker,
            )


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    # Protobuf merge, as Istio applies MERGE: maps merge, lists append.
    for key, value in copy.deepcopy(patch).items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        elif isinstance(value, list) and isinstance(target.get(key), list):
            target[key].extend(value)
        else:
            target[key] = value


def test_walk_sees_nested_mappings() -> None:
    assert 3 == len(list(walk({"a": [{"b": {}}]})))
