"""Run ``envoy --mode validate`` on a config, and walk configs for the tests.

Validation reads every file a config names (CA bundles, JWKS). Paths that
exist only inside a pod are pointed at local stand-ins first, and the
caller is told which were, so a test can insist that nothing else moved.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from extproc.local import envoy_binary


def validate(
    config: dict[str, Any], workdir: Path, stand_ins: dict[str, Path]
) -> list[str]:
    """Validate ``config`` with the real Envoy; return the paths replaced.

    ``stand_ins`` maps a pod-only path to the local file used instead. A
    failed validation raises ``AssertionError`` with Envoy's complaint.
    """
    replaced = _replace_filenames(config, stand_ins)
    path = workdir / "validate.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))

    result = subprocess.run(
        [
            str(envoy_binary()),
            "--mode",
            "validate",
            "-c",
            str(path),
            "--disable-hot-restart",
            "--log-level",
            "error",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert 0 == result.returncode, (
        f"envoy rejected the config:\n{result.stdout}{result.stderr}"
    )
    return replaced


def walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every mapping inside ``node``, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def _replace_filenames(config: dict[str, Any], stand_ins: dict[str, Path]) -> list[str]:
    replaced = []
    for mapping in walk(config):
        name = mapping.get("filename")
        if isinstance(name, str) and name in stand_ins:
            mapping["filename"] = str(stand_ins[name])
            replaced.append(name)

    return sorted(set(replaced))
