"""Request-body helpers that every provider family shares."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from extproc.errors import BadRequest


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def load_object(body: bytes, operation: str) -> dict[str, Any]:
    """Parse ``body`` as one strict JSON object (no NaN or Infinity).

    Raises ``BadRequest`` with a sentence the client can act on.
    """
    if not body.strip():
        raise BadRequest(f"The request body is empty; {operation} needs a JSON object.")
    try:
        obj = json.loads(body, parse_constant=_refuse_constant)
    except RecursionError as exc:
        raise BadRequest(
            f"The request body nests too deeply to read; {operation} needs a "
            "JSON object."
        ) from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(
            f"The request body is not valid JSON ({exc}); {operation} needs a "
            "JSON object."
        ) from exc
    if not isinstance(obj, dict):
        raise BadRequest(
            f"The request body is a JSON {_json_kind(obj)}; {operation} needs a "
            "JSON object."
        )

    return obj


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    return "number"


def estimate_input_tokens(body: bytes) -> int:
    """An upper-leaning input estimate: one token per three body bytes.

    Tokenisers average three to four bytes per token on English text and
    more on code or other scripts, and the body also carries JSON syntax and
    parameters that are not billed; so the byte length over-estimates the
    input tokens, which is the safe side for a reservation.
    """
    return -(-len(body) // 3)


def positive_int(value: Any) -> int | None:
    """``value`` when it is a positive integer (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None

    return value


def dig(obj: Any, *keys: str) -> Any:
    """``obj[k1][k2]...`` through nested objects; None where a step is missing."""
    for key in keys:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)

    return obj


def first_cap(obj: Any, paths: tuple[tuple[str, ...], ...]) -> int | None:
    """The first positive integer found at one of ``paths`` in ``obj``."""
    for path in paths:
        cap = positive_int(dig(obj, *path))
        if cap is not None:
            return cap

    return None


def replace_model(body: bytes, model: str) -> bytes | None:
    """``body`` (a JSON object with a string ``model``) naming ``model``
    instead; None when the body has no such field."""
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("model"), str):
        return None
    obj["model"] = model
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
