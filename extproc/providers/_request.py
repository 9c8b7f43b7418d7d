"""Request-body helpers that every provider family shares."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from extproc.errors import BadRequest
from extproc.providers._media import MIN_MEDIA_CHARS, media_tokens


@dataclass(frozen=True, slots=True)
class InputEstimate:
    """The input of a request body, as far as its bytes tell.

    ``text_bytes`` is the body read as text (JSON syntax and parameters
    included); ``media_tokens`` bounds what its inline images, audio and
    video are billed, which their base64 length does not tell.
    """

    text_bytes: int = 0
    media_tokens: int = 0

    def tokens(self, bytes_per_token: int) -> int:
        """The estimate at ``bytes_per_token`` bytes of text a token."""
        return -(-self.text_bytes // bytes_per_token) + self.media_tokens


# Base64 (and base64url) characters, with the escapes JSON may put among
# them, long enough to be inline media: a data: URL's payload starts after
# its comma, so the run is the payload whatever field holds it.
_BASE64_RUN = re.compile(rb"[A-Za-z0-9+/_\-=\\]{%d,}" % MIN_MEDIA_CHARS)


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


def estimate_input(body: bytes) -> InputEstimate:
    """What ``body`` holds as input: its bytes read as text, except inline
    media, which count as what providers bill them (``media_tokens``). A
    base64 image of 5 MB is some 1.7 million tokens read as text, but a
    few thousand as billed.

    Payloads are found as long runs of base64 in the body's bytes, not by
    walking the parsed object: a body of millions of small values costs a
    walk seconds, a scan a fraction of its parse.
    """
    media_bytes = media = 0
    for run in _BASE64_RUN.finditer(body):
        tokens = media_tokens(_unescaped(run.group()))
        if tokens is not None:
            media_bytes += len(run.group())
            media += tokens

    return InputEstimate(len(body) - media_bytes, media)


def _unescaped(run: bytes) -> str:
    """A base64 run as the JSON string holds it: escaped line breaks
    dropped, and slashes that encoders escape (PHP's does) unescaped."""
    for escape, plain in ((b"\\/", b"/"), (b"\\n", b""), (b"\\r", b"")):
        if escape in run:
            run = run.replace(escape, plain)

    return run.decode("ascii")


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


def for_every_choice(cap: int | None, obj: Any) -> int | None:
    """``cap`` times the answers ``obj`` asks for: each of ``n`` choices
    (and, for legacy completions, each ``best_of`` candidate) is generated
    and billed. None stays None."""
    if cap is None:
        return None
    choices = max(
        positive_int(dig(obj, "n")) or 1, positive_int(dig(obj, "best_of")) or 1
    )

    return cap * choices


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
