"""Reading the policy file: YAML with line numbers, validated strictly.

A fault is reported as ``line N: a.b.c: what is wrong``, so an operator can
go straight to the key that is misspelled or out of range.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from extproc.errors import PolicyError
from extproc.policy.model import Policy

Lines = dict[tuple[Any, ...], int]

_MERGE_TAG = "tag:yaml.org,2002:merge"
# Values built from the file, counted each time an alias repeats them: far
# above any real policy, far below what nested aliases can expand to.
MAX_VALUES = 100_000


@dataclass
class _Document:
    """What building the YAML gathers: the line of every path, the problems
    found, and how many values were built so far."""

    lines: Lines = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    values: int = 0

    def count(self, node: yaml.Node) -> None:
        """Count one more value; refuse a file past ``MAX_VALUES``."""
        self.values += 1
        if self.values > MAX_VALUES:
            raise yaml.YAMLError(
                f"line {node.start_mark.line + 1}: the file expands to over "
                f"{MAX_VALUES} values (aliases repeating aliases?)"
            )


def load_policy(path: str | Path) -> Policy:
    """Read and validate the policy at ``path``. Raises ``PolicyError``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(str(path), [f"cannot read the file: {exc}"]) from exc

    return parse_policy(text, source=str(path))


def parse_policy(text: str, *, source: str = "<policy>") -> Policy:
    """Validate policy YAML ``text``. Raises ``PolicyError`` naming key and line."""
    data, lines = _compose(text, source)

    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(
            source, [_describe(err, lines) for err in exc.errors()]
        ) from exc


def _compose(text: str, source: str) -> tuple[Any, Lines]:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise PolicyError(source, [f"not valid YAML: {exc}"]) from exc
    if root is None:
        raise PolicyError(source, ["the file is empty"])

    document = _Document()
    try:
        data = _build(root, (), document)
    except yaml.YAMLError as exc:
        raise PolicyError(source, [f"not valid YAML: {exc}"]) from exc
    if document.problems:
        raise PolicyError(source, document.problems)

    return data, document.lines


def _build(node: yaml.Node, path: tuple[Any, ...], document: _Document) -> Any:
    """Turn a YAML node into plain data, noting the line of every path.

    Floats stay strings so that money parses into Decimal exactly.
    """
    document.count(node)
    document.lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        return _build_mapping(node, path, document)
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(item, path + (index,), document)
            for index, item in enumerate(node.value)
        ]

    return _scalar(node)


def _build_mapping(
    node: yaml.MappingNode, path: tuple[Any, ...], document: _Document
) -> dict[Any, Any]:
    """A mapping's keys; ``<<: *anchor`` merge keys supply the keys that the
    mapping does not set itself, as YAML's merge key type defines."""
    result: dict[Any, Any] = {}
    merged: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE_TAG:
            merged = {**_merge_sources(value_node, path, document), **merged}
            continue
        key = _scalar(key_node)
        if key in result:
            document.problems.append(
                f"line {key_node.start_mark.line + 1}: "
                f"{_dotted(path + (key,))}: key given twice"
            )
        result[key] = _build(value_node, path + (key,), document)
        document.lines[path + (key,)] = key_node.start_mark.line + 1

    return {**merged, **result}


def _merge_sources(
    node: yaml.Node, path: tuple[Any, ...], document: _Document
) -> dict[Any, Any]:
    """What ``<<`` merges in: one mapping, or a list of them (earlier wins)."""
    sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
    merged: dict[Any, Any] = {}
    for source in reversed(sources):
        if not isinstance(source, yaml.MappingNode):
            document.problems.append(
                f"line {source.start_mark.line + 1}: {_dotted(path) or '(top level)'}"
                ": << merges mappings only"
            )
            continue
        document.count(source)
        merged.update(_build_mapping(source, path, document))

    return merged


def _scalar(node: yaml.Node) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        return str(node.value)
    if node.tag == "tag:yaml.org,2002:float":
        return node.value
    return yaml.SafeLoader(node.value).construct_object(node)


def _describe(error: dict[str, Any], lines: Lines) -> str:
    loc = tuple(error["loc"])
    line = _nearest_line(loc, lines)
    where = f"line {line}: " if line else ""
    message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]

    return f"{where}{_dotted(loc) or '(top level)'}: {message}"


def _nearest_line(loc: tuple[Any, ...], lines: Lines) -> int | None:
    for cut in range(len(loc), -1, -1):
        if loc[:cut] in lines:
            return lines[loc[:cut]]
    return None


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)
