"""The Dockerfile: multi-stage, and a final image that holds the installed
server and nothing to build or install with, run as a non-root user.

The image is not built here (no container daemon on this machine); these
tests read the Dockerfile with dockerfile-parse, the parser container build
tooling uses.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]
BUILD_TOOLS = (
    "gcc",
    "g++",
    "make",
    "build-essential",
    "-dev ",
    "apt-get",
    "apk ",
    "pip ",
)


def _stages() -> list[list[dict[str, str]]]:
    parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
    stages: list[list[dict[str, str]]] = []
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def _values(stage: list[dict[str, str]], name: str) -> list[str]:
    return [i["value"] for i in stage if i["instruction"] == name]


def test_image_is_built_in_two_stages() -> None:
    build, final = _stages()

    assert " AS build" in _values(build, "FROM")[0]
    assert ["--from=build /opt/tollgate /opt/tollgate"] == _values(final, "COPY")


def test_final_stage_installs_and_runs_nothing_at_build_time() -> None:
    final = _stages()[-1]

    assert [] == _values(final, "RUN")
    assert [] == _values(final, "ADD")
    # Distroless: no shell and no package manager in the base image.
    assert _values(final, "FROM")[0].startswith("gcr.io/distroless/python3-debian12")


def test_final_stage_runs_as_a_non_root_user() -> None:
    [user] = _values(_stages()[-1], "USER")

    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0


def test_build_tools_stay_in_the_build_stage() -> None:
    final_text = " ".join(i["content"] for i in _stages()[-1])

    for tool in BUILD_TOOLS:
        assert tool not in final_text, tool


def test_build_stage_removes_the_installer_from_what_it_hands_over() -> None:
    runs = " ".join(_values(_stages()[0], "RUN"))

    assert "pip uninstall -y pip setuptools" in runs


def test_entrypoint_and_probe_match_the_kubernetes_manifest() -> None:
    final = _stages()[-1]
    deployment = yaml.safe_load((ROOT / "k8s" / "base" / "deployment.yaml").read_text())
    tollgate = next(
        c
        for c in deployment["spec"]["template"]["spec"]["containers"]
        if c["name"] == "tollgate"
    )

    assert ["/opt/tollgate/bin/tollgate"] == json.loads(_values(final, "ENTRYPOINT")[0])
    assert ["serve"] == tollgate["args"]
    assert tollgate["livenessProbe"]["exec"]["command"][0].startswith(
        "/opt/tollgate/bin/"
    )


def test_build_context_is_limited_to_what_the_image_needs() -> None:
    ignored = (ROOT / ".dockerignore").read_text().splitlines()

    assert "*" in ignored
    assert {"!pyproject.toml", "!README.md", "!extproc/"} <= set(ignored)
