"""k8s/: every tree renders, every document fits its Kubernetes or Istio
schema, and the pieces agree with each other and with the Envoy config."""

from __future__ import annotations

import base64
import copy
from pathlib import PurePosixPath
from typing import Any

import pytest
import yaml

from extproc.policy import parse_policy
from tests.deploy.envoy_validate import walk
from tests.deploy.manifests import K8S_DIR, render, schema_problems

TREES = {
    "base": K8S_DIR / "base",
    "dev": K8S_DIR / "overlays" / "dev",
    "istio": K8S_DIR / "overlays" / "istio",
    "app-namespace": K8S_DIR / "app-namespace",
    "istio-app-namespace": K8S_DIR / "overlays" / "istio" / "app-namespace",
}
ENVOY = yaml.safe_load((K8S_DIR.parent / "envoy" / "egress.yaml").read_text())
SOCKET_DIR = "/var/run/tollgate"
INJECTED = "istio-proxy"  # filled in by Istio's injector; its defaults are Istio's


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(path) for name, path in TREES.items()}


def _kinds(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def _one(
    docs: list[dict[str, Any]], kind: str, name: str | None = None
) -> dict[str, Any]:
    found = [
        d for d in _kinds(docs, kind) if name is None or d["metadata"]["name"] == name
    ]
    assert 1 == len(found), (kind, name, [d["metadata"]["name"] for d in found])
    return found[0]


def _gateway(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return _one(docs, "Deployment", "tollgate-egress")


def _containers(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {
        e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])
    }


def _mounts(container: dict[str, Any]) -> dict[str, str]:
    return {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}


# Schemas.


@pytest.mark.parametrize("tree", TREES)
def test_every_document_fits_its_schema(rendered, tree: str) -> None:
    docs = rendered[tree]

    problems = {
        f"{d['kind']}/{d['metadata']['name']}": schema_problems(d) for d in docs
    }

    assert docs
    assert {} == {name: found for name, found in problems.items() if found}


def test_kubernetes_schema_refuses_an_unknown_field(rendered) -> None:
    deployment = copy.deepcopy(_gateway(rendered["base"]))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}

    assert schema_problems(deployment)


def test_istio_schema_refuses_an_unknown_field_and_a_wrong_value(rendered) -> None:
    gateway = _one(rendered["istio"], "Gateway")
    misspelled = {**gateway, "spec": {**gateway["spec"], "selectr": {"a": "b"}}}
    rule = copy.deepcopy(_one(rendered["istio"], "DestinationRule", "openai-tls"))
    rule["spec"]["trafficPolicy"]["portLevelSettings"][0]["tls"]["mode"] = "SIMPLEST"

    assert schema_problems(misspelled)
    assert schema_problems(rule)


# The gateway pod.


@pytest.mark.parametrize("tree", ["base", "dev", "istio"])
def test_every_pod_runs_non_root_read_only_without_privileges(
    rendered, tree: str
) -> None:
    for deployment in _kinds(rendered[tree], "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        assert "RuntimeDefault" == pod["securityContext"]["seccompProfile"]["type"]
        assert pod["automountServiceAccountToken"] is False
        for name, container in _containers(deployment).items():
            if name == INJECTED:
                continue
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert ["ALL"] == context["capabilities"]["drop"], name
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
            assert "memory" in container["resources"]["limits"], name
            assert "livenessProbe" in container, name


def test_namespace_enforces_the_restricted_pod_security_standard(rendered) -> None:
    namespace = _one(rendered["base"], "Namespace")

    assert (
        "restricted"
        == namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
    )


def test_envoy_and_tollgate_share_the_socket_envoy_dials(rendered) -> None:
    containers = _containers(_gateway(rendered["base"]))
    [extproc] = [
        c
        for c in ENVOY["static_resources"]["clusters"]
        if c["name"] == "tollgate_extproc"
    ]
    pipe = extproc["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"][
        "address"
    ]["pipe"]["path"]
    pod = _gateway(rendered["base"])["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "extproc-socket"]

    assert f"unix:{pipe}" == _env(containers["tollgate"])["TOLLGATE_GRPC_LISTEN"]
    assert pipe.startswith(SOCKET_DIR + "/")
    assert SOCKET_DIR == _mounts(containers["envoy"])["extproc-socket"]
    assert SOCKET_DIR == _mounts(containers["tollgate"])["extproc-socket"]
    assert "emptyDir" in volume


def test_envoy_mounts_the_bootstrap_and_jwks_its_config_names(rendered) -> None:
    docs = rendered["base"]
    envoy = _containers(_gateway(docs))["envoy"]
    jwt = ENVOY["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]["http_filters"][0]["typed_config"]
    jwks_file = jwt["providers"]["workload"]["local_jwks"]["filename"]
    config_map = next(
        d
        for d in _kinds(docs, "ConfigMap")
        if d["metadata"]["name"].startswith("tollgate-envoy-")
    )

    assert (
        "/etc/envoy/envoy.yaml"
        == envoy["args"][envoy["args"].index("--config-path") + 1]
    )
    assert "/etc/envoy" == _mounts(envoy)["envoy-config"]
    assert jwks_file == _mounts(envoy)["jwks"] + "/jwks.json"
    assert ENVOY == yaml.safe_load(config_map["data"]["envoy.yaml"])


def test_probes_use_envoys_health_listener(rendered) -> None:
    envoy = _containers(_gateway(rendered["base"]))["envoy"]
    health = next(
        listener
        for listener in ENVOY["static_resources"]["listeners"]
        if listener["name"] == "tollgate_health"
    )
    port = health["address"]["socket_address"]["port_value"]
    ports = {p["name"]: p["containerPort"] for p in envoy["ports"]}

    assert "/ready" == envoy["readinessProbe"]["httpGet"]["path"]
    assert "/live" == envoy["livenessProbe"]["httpGet"]["path"]
    assert port == ports[envoy["readinessProbe"]["httpGet"]["port"]]


def test_policy_config_map_is_a_valid_policy_whose_keys_are_mounted(rendered) -> None:
    docs = rendered["base"]
    tollgate = _containers(_gateway(docs))["tollgate"]
    config_map = _one(docs, "ConfigMap", "tollgate-policy")
    policy_file = _env(tollgate)["TOLLGATE_POLICY_FILE"]
    policy = parse_policy(config_map["data"]["policy.yaml"], source="tollgate-policy")
    keys_dir = _mounts(tollgate)["provider-keys"]
    pod = _gateway(docs)["spec"]["template"]["spec"]
    [secret] = [v["secret"] for v in pod["volumes"] if v["name"] == "provider-keys"]

    assert policy_file == _mounts(tollgate)["policy"] + "/policy.yaml"
    assert policy.providers
    for name, provider in policy.providers.items():
        assert provider.credential is not None and provider.credential.file, name
        assert provider.credential.file.startswith(keys_dir + "/"), name
    assert "tollgate-provider-keys" == secret["secretName"]


def test_the_journal_is_on_a_writable_volume_of_its_own(rendered) -> None:
    tollgate = _containers(_gateway(rendered["base"]))["tollgate"]
    volumes = {
        v["name"]: v
        for v in _gateway(rendered["base"])["spec"]["template"]["spec"]["volumes"]
    }

    journal = PurePosixPath(_env(tollgate)["TOLLGATE_JOURNAL_PATH"])
    [volume] = [
        n for n, path in _mounts(tollgate).items() if path == str(journal.parent)
    ]
    assert "emptyDir" in volumes[volume]


def test_the_pod_drains_its_envoy_and_under_istio_outlives_the_proxy(
    rendered,
) -> None:
    base = _containers(_gateway(rendered["base"]))
    istio = _containers(_gateway(rendered["istio"]))

    drain = base["tollgate"]["lifecycle"]["preStop"]["exec"]["command"]
    assert ("extproc.drain", {"seconds": 60}) == (
        drain[2],
        base["envoy"]["lifecycle"]["preStop"]["sleep"],
    )
    assert {"sleep": {"seconds": 20}} == istio["tollgate"]["lifecycle"]["preStop"]


def test_redis_url_comes_from_a_secret(rendered) -> None:
    tollgate = _containers(_gateway(rendered["base"]))["tollgate"]

    assert {"secretKeyRef": {"name": "tollgate-redis", "key": "url"}} == _env(tollgate)[
        "TOLLGATE_REDIS_URL"
    ]


def test_service_hpa_and_pdb_point_at_the_gateway_pods(rendered) -> None:
    docs = rendered["base"]
    deployment = _gateway(docs)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = _one(docs, "Service", "tollgate-egress")
    hpa = _one(docs, "HorizontalPodAutoscaler")
    pdb = _one(docs, "PodDisruptionBudget")
    envoy_ports = {p["name"] for p in _containers(deployment)["envoy"]["ports"]}

    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= envoy_ports
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "tollgate-egress",
    } == hpa["spec"]["scaleTargetRef"]
    assert hpa["spec"]["minReplicas"] >= 2
    assert 1 == pdb["spec"]["maxUnavailable"]


# The dev overlay.


def test_dev_runs_a_redis_that_the_gateway_is_pointed_at(rendered) -> None:
    docs = rendered["dev"]
    redis = _one(docs, "Service", "redis")
    [secret] = [
        d
        for d in _kinds(docs, "Secret")
        if d["metadata"]["name"].startswith("tollgate-redis")
    ]
    ref = _env(_containers(_gateway(docs))["tollgate"])["TOLLGATE_REDIS_URL"][
        "secretKeyRef"
    ]
    url = base64.b64decode(secret["data"]["url"]).decode()

    assert secret["metadata"]["name"] == ref["name"]
    assert "redis://redis.tollgate.svc.cluster.local:6379/0" == url
    assert "tollgate" == redis["metadata"]["namespace"]
    assert 6379 == redis["spec"]["ports"][0]["port"]
    assert _one(docs, "Deployment", "redis")


# The Istio overlay.


def _provider_hosts() -> set[str]:
    policy = parse_policy((K8S_DIR / "base" / "policy.yaml").read_text())
    return {host for provider in policy.providers.values() for host in provider.hosts}


def test_istio_replaces_envoy_with_the_injected_gateway_proxy(rendered) -> None:
    docs = rendered["istio"]
    deployment = _gateway(docs)
    template = deployment["spec"]["template"]
    containers = _containers(deployment)

    assert {"istio-proxy", "tollgate"} == set(containers)
    assert "auto" == containers["istio-proxy"]["image"]
    assert "gateway" == template["metadata"]["annotations"]["inject.istio.io/templates"]
    assert "true" == template["metadata"]["labels"]["sidecar.istio.io/inject"]
    assert SOCKET_DIR == _mounts(containers["istio-proxy"])["extproc-socket"]
    assert "readinessProbe" in containers["tollgate"]
    assert not [
        d
        for d in _kinds(docs, "ConfigMap")
        if d["metadata"]["name"].startswith("tollgate-envoy")
    ]


def test_istio_resources_select_the_gateway_pods(rendered) -> None:
    docs = rendered["istio"]
    labels = _gateway(docs)["spec"]["template"]["metadata"]["labels"]

    assert (
        _one(docs, "EnvoyFilter")["spec"]["workloadSelector"]["labels"].items()
        <= labels.items()
    )
    assert _one(docs, "Gateway")["spec"]["selector"].items() <= labels.items()


def test_every_provider_is_routed_through_the_gateway_with_verified_tls(
    rendered,
) -> None:
    docs = rendered["istio"]
    service = _one(docs, "Service", "tollgate-egress")
    gateway_host = (
        f"tollgate-egress.{service['metadata']['namespace']}.svc.cluster.local"
    )
    [server] = _one(docs, "Gateway")["spec"]["servers"]
    subsets = {
        s["name"]: s
        for s in _one(docs, "DestinationRule", "tollgate-egress-gateway")["spec"][
            "subsets"
        ]
    }
    entries = _kinds(docs, "ServiceEntry")

    assert _provider_hosts() == {h for e in entries for h in e["spec"]["hosts"]}
    assert "ISTIO_MUTUAL" == server["tls"]["mode"]
    assert server["port"]["number"] == service["spec"]["ports"][0]["port"]
    for entry in entries:
        [host] = entry["spec"]["hosts"]
        name = entry["metadata"]["name"]
        # Only port 80, mapped to 443: a direct https:// call is in no registry.
        assert [(80, 443)] == [
            (p["number"], p["targetPort"]) for p in entry["spec"]["ports"]
        ]
        assert f"./{host}" in server["hosts"]
        assert {"mode": "ISTIO_MUTUAL", "sni": host} == subsets[name]["trafficPolicy"][
            "portLevelSettings"
        ][0]["tls"]
        tls = _one(docs, "DestinationRule", f"{name}-tls")
        assert ["."] == tls["spec"]["exportTo"]
        [origination] = tls["spec"]["trafficPolicy"]["portLevelSettings"]
        assert {
            "mode": "SIMPLE",
            "sni": host,
            "subjectAltNames": [host],
            "caCertificates": "/etc/ssl/certs/ca-certificates.crt",
        } == origination["tls"]
        service_routes = _one(docs, "VirtualService", f"{name}-through-tollgate")[
            "spec"
        ]
        to_gateway, to_provider = service_routes["http"]
        assert {
            "host": gateway_host,
            "subset": name,
            "port": {"number": 443},
        } == to_gateway["route"][0]["destination"]
        assert {"host": host, "port": {"number": 80}} == to_provider["route"][0][
            "destination"
        ]
        assert "timeout" not in to_gateway and "timeout" not in to_provider


def test_mesh_egress_is_registry_only(rendered) -> None:
    sidecar = _one(rendered["istio"], "Sidecar")

    assert "istio-system" == sidecar["metadata"]["namespace"]
    assert "REGISTRY_ONLY" == sidecar["spec"]["outboundTrafficPolicy"]["mode"]


# Network policies.


def test_application_pods_reach_only_dns_and_the_gateway(rendered) -> None:
    policy = _one(rendered["app-namespace"], "NetworkPolicy")
    gateway_labels = _gateway(rendered["base"])["spec"]["template"]["metadata"][
        "labels"
    ]
    peers = [peer for rule in policy["spec"]["egress"] for peer in rule["to"]]

    assert {} == policy["spec"]["podSelector"]
    assert ["Egress"] == policy["spec"]["policyTypes"]
    assert not [peer for peer in peers if "ipBlock" in peer]
    assert [
        ("kube-system", {"k8s-app": "kube-dns"}),
        ("tollgate", {"app.kubernetes.io/name": "tollgate-egress"}),
    ] == [
        (
            p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            p["podSelector"]["matchLabels"],
        )
        for p in peers
    ]
    assert peers[1]["podSelector"]["matchLabels"].items() <= gateway_labels.items()


def test_in_the_mesh_application_pods_also_reach_istiod_and_nothing_else(
    rendered,
) -> None:
    policy = _one(rendered["istio-app-namespace"], "NetworkPolicy")
    rules = policy["spec"]["egress"]

    assert 3 == len(rules)
    assert [{"port": 8443, "protocol": "TCP"}] == rules[1]["ports"]
    assert [{"port": 15012, "protocol": "TCP"}] == rules[2]["ports"]
    assert {"app": "istiod"} == rules[2]["to"][0]["podSelector"]["matchLabels"]


def test_gateway_cannot_reach_the_cloud_metadata_service(rendered) -> None:
    policy = _one(rendered["base"], "NetworkPolicy", "tollgate-egress")
    public = [
        peer["ipBlock"]
        for rule in policy["spec"]["egress"]
        for peer in rule["to"]
        if peer.get("ipBlock", {}).get("cidr") == "0.0.0.0/0"
    ]

    assert 1 == len(public)
    assert "169.254.0.0/16" in public[0]["except"]


def test_no_manifest_holds_a_secret_value(rendered) -> None:
    # Provider keys are created by the operator, never committed; the only
    # generated Secret is the dev Redis address.
    for tree, docs in rendered.items():
        for secret in _kinds(docs, "Secret"):
            assert (tree, ["url"]) == ("dev", sorted(secret["data"])), secret[
                "metadata"
            ]
        for mapping in walk(docs):
            for value in mapping.values():
                if isinstance(value, str):
                    assert not value.startswith(("sk-", "AIza", "AKIA")), value


def test_every_tree_is_rendered() -> None:
    found = {path.parent for path in K8S_DIR.rglob("kustomization.yaml")}

    assert set(TREES.values()) == found
