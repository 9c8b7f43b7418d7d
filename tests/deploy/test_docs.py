"""docs/deploy.md, followed as written: its shell steps, in order, in one
shell started at the top of the repository (as an operator would paste
them)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tests.deploy.manifests import kustomize_argv

ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
FENCE = re.compile(r"^( *)```sh\n(.*?)^\1```", re.MULTILINE | re.DOTALL)


def _shell_blocks() -> list[tuple[str, str]]:
    """Every ``sh`` block of the guide as (indentation, text), in order."""
    return [
        (match.group(1), match.group(2))
        for match in FENCE.finditer(DEPLOY_DOC.read_text())
    ]


def _commands(text: str) -> list[str]:
    """The block's commands, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    lines = [line.split(" #")[0].strip() for line in joined.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_namespace_is_created_before_the_first_command_that_needs_it() -> None:
    # A block indented under a bullet belongs to one path only (the managed
    # Redis); the dev path skips it, and its `kubectl -n tollgate create
    # secret` in step 3 would find no namespace.
    creates = re.compile(
        r"kubectl (create namespace tollgate|apply -f k8s/base/namespace\.yaml)"
    )
    uses = re.compile(r"kubectl -n tollgate ")
    created = False
    for indent, text in _shell_blocks():
        for command in _commands(text):
            if uses.search(command) and not indent:
                assert created, f"{command!r} runs before the namespace exists"
                return
            if creates.search(command) and not indent:
                created = True
    raise AssertionError("the guide never uses the tollgate namespace")


def test_own_overlay_builds_with_the_next_steps_run_in_the_same_shell(
    tmp_path: Path,
) -> None:
    # Step 1 writes deploy/prod; step 6 applies it with a path from the top
    # of the repository. Run both in one shell, as a reader pastes them.
    shutil.copytree(ROOT / "k8s", tmp_path / "k8s")
    step_1 = next(text for _, text in _shell_blocks() if "deploy/prod" in text)
    build = " ".join(kustomize_argv(Path("deploy/prod")))
    script = f"set -e\n{step_1}\n{build} > /dev/null\n"

    result = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert 0 == result.returncode, result.stderr
