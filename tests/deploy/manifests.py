"""Render the Kustomize trees in k8s/ and check them against API schemas.

Rendering: ``kustomize build`` when a ``kustomize`` binary is on PATH (or
named by ``TOLLGATE_KUSTOMIZE``), else ``kubectl kustomize`` (kubectl embeds
kustomize; this machine image ships kubectl). No Python package renders
Kustomize faithfully, so the real tool is required, and its absence fails
the tests rather than skipping them.

Schemas, all offline, from pinned packages:
- Kubernetes kinds: ``kubernetes-validate`` (the OpenAPI schemas of each
  Kubernetes release as JSON Schema), in strict mode, which refuses fields
  the API does not have;
- Istio kinds: ``cloudcoil-models-istio`` (models generated from Istio's
  CRD schemas). The models ignore unknown fields, so the document is also
  compared with its re-serialised form: a field that did not survive was not
  in the schema.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml
from cloudcoil.models.istio.networking import v1 as istio_v1
from cloudcoil.models.istio.networking import v1alpha3 as istio_v1alpha3

K8S_DIR = Path(__file__).resolve().parents[2] / "k8s"
# The oldest Kubernetes release the manifests support (the preStop sleep
# action is GA from 1.30) and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
ISTIO_MODELS: dict[tuple[str, str], Any] = {
    ("networking.istio.io/v1", kind): getattr(istio_v1, kind)
    for kind in (
        "Gateway",
        "VirtualService",
        "DestinationRule",
        "ServiceEntry",
        "Sidecar",
    )
}
ISTIO_MODELS[("networking.istio.io/v1alpha3", "EnvoyFilter")] = (
    istio_v1alpha3.EnvoyFilter
)


def kustomize_argv(directory: Path) -> list[str]:
    """The command that renders ``directory``; fails loudly if there is none."""
    binary = os.environ.get("TOLLGATE_KUSTOMIZE") or shutil.which("kustomize")
    if binary:
        return [binary, "build", str(directory)]
    kubectl = shutil.which("kubectl")
    if kubectl:
        return [kubectl, "kustomize", str(directory)]
    raise AssertionError(
        "rendering k8s/ needs kustomize or kubectl (which embeds it) on PATH, "
        "or TOLLGATE_KUSTOMIZE naming a kustomize binary"
    )


def render(directory: Path) -> list[dict[str, Any]]:
    """The documents ``kustomize build`` makes of ``directory``."""
    result = subprocess.run(
        kustomize_argv(directory),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 == result.returncode, f"kustomize failed for {directory}:\n{result.stderr}"

    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def schema_problems(document: dict[str, Any]) -> list[str]:
    """Why ``document`` does not fit its API schema; empty when it fits."""
    key = (document.get("apiVersion", ""), document.get("kind", ""))
    if key in ISTIO_MODELS:
        return _istio_problems(ISTIO_MODELS[key], document)
    if "istio.io" in key[0]:
        return [f"no Istio schema here for {key}"]

    problems = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = ".".join(str(p) for p in error.path)
            problems.append(f"Kubernetes {version}: {where}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            problems.append(f"Kubernetes {version}: {error.message}")

    return problems


def _istio_problems(model: Any, document: dict[str, Any]) -> list[str]:
    try:
        parsed = model.model_validate(document)
    except ValueError as error:
        return [str(error)]

    kept = parsed.model_dump(by_alias=True, exclude_unset=True, mode="json")

    return [f"not in the schema (or changed): {p}" for p in _lost(document, kept, "")]


def _lost(given: Any, kept: Any, path: str) -> list[str]:
    if isinstance(given, dict):
        if not isinstance(kept, dict):
            return [path]
        lost = []
        for key, value in given.items():
            if key in kept:
                lost += _lost(value, kept[key], f"{path}.{key}")
            else:
                lost.append(f"{path}.{key}")
        return lost
    if isinstance(given, list):
        if not isinstance(kept, list) or len(given) != len(kept):
            return [path]
        return [
            p
            for i, (a, b) in enumerate(zip(given, kept))
            for p in _lost(a, b, f"{path}[{i}]")
        ]

    return [] if given == kept else [f"{path}: {given!r} became {kept!r}"]
