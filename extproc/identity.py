"""Who is calling and with what: identity, tool, attribution labels.

The identity comes only from the policy's trusted header (Envoy is expected
to remove a client's copy unless a trusted filter set it). The tool and the
labels are the client's own claims: they split spend, never grant it.
"""

from __future__ import annotations

import re

from extproc.errors import BadRequest, IdentityInvalid, IdentityMissing
from extproc.policy.model import AttributionHeader, Tools

MAX_IDENTITY_LENGTH = 256
_SCOPE_MARKS = ("#", "/tool:")
_TOOL_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_LABEL_PART = re.compile(r"^[A-Za-z0-9._:/-]{1,128}$")

# User-Agent prefixes of common coding agents and SDKs; the policy's own
# patterns are tried first.
KNOWN_TOOLS: tuple[tuple[str, str], ...] = (
    ("claude-cli/", "claude-code"),
    ("codex_cli_rs/", "codex"),
    ("codex_exec/", "codex"),
    ("geminicli/", "gemini-cli"),
    ("cursor/", "cursor"),
    ("aider/", "aider"),
    ("continue/", "continue"),
    ("cline/", "cline"),
    ("opencode/", "opencode"),
    ("openai/python", "openai-python"),
    ("openai/js", "openai-node"),
    ("anthropic/python", "anthropic-python"),
    ("anthropic/js", "anthropic-node"),
    ("google-genai-sdk/", "google-genai"),
    ("litellm/", "litellm"),
    ("curl/", "curl"),
)


def identity_from(values: list[bytes], header: str) -> str:
    """The caller's identity from the raw ``values`` sent in ``header``.

    Raises ``IdentityMissing`` naming the header when it is absent, and
    ``IdentityInvalid`` when it is repeated, not UTF-8, too long, not
    printable, or holds what would make it another scope's name.
    """
    if len(values) > 1:
        raise IdentityInvalid(
            f"the {header} header must be sent once, not {len(values)} times"
        )
    try:
        value = values[0].decode("utf-8").strip() if values else ""
    except UnicodeDecodeError:
        raise IdentityInvalid(f"the {header} header must be UTF-8 text") from None
    if not value:
        raise IdentityMissing(
            f"this gateway needs the caller's identity in the {header} header"
        )
    if "," in value:
        # Proxies join repeated headers with commas; an identity holding one
        # could be two callers' headers run together.
        raise IdentityInvalid(f"the {header} header must not contain a comma")
    if len(value) > MAX_IDENTITY_LENGTH or not value.isprintable():
        raise IdentityInvalid(
            f"the {header} header must be printable text of at most "
            f"{MAX_IDENTITY_LENGTH} characters"
        )
    if any(mark in value for mark in _SCOPE_MARKS):
        # Bucket names are built from the identity: "user:alice#rpm" is
        # alice's rate limit, "user:alice/tool:x" her budget for tool x.
        raise IdentityInvalid(f"the {header} header must not contain '#' or '/tool:'")
    return value


def tool_from(headers: dict[str, str], tools: Tools) -> str | None:
    """The calling tool: the explicit header if valid, else by User-Agent."""
    explicit = headers.get(tools.header, "").strip()
    if explicit and _TOOL_NAME.match(explicit):
        return explicit.lower()

    agent = headers.get("user-agent", "").lower()
    for pattern in tools.patterns:
        if agent.startswith(pattern.user_agent_prefix.lower()):
            return pattern.name
    for prefix, name in KNOWN_TOOLS:
        if agent.startswith(prefix):
            return name
    return None


def labels_from(
    headers: dict[str, str], config: AttributionHeader
) -> tuple[tuple[str, str], ...]:
    """Custom spend labels from ``key=value; key=value``.

    Raises ``BadRequest`` for a header over the size or count limits or with
    a malformed pair, so that a client learns why its labels were refused.
    """
    raw = headers.get(config.header, "").strip()
    if not raw:
        return ()
    if len(raw.encode()) > config.max_bytes:
        raise BadRequest(f"the {config.header} header is over {config.max_bytes} bytes")
    pairs = [part.strip() for part in raw.replace(",", ";").split(";") if part.strip()]
    if len(pairs) > config.max_pairs:
        raise BadRequest(
            f"the {config.header} header has over {config.max_pairs} pairs"
        )

    labels = dict(_pair(pair, config.header) for pair in pairs)
    return tuple(sorted(labels.items()))


def _pair(text: str, header: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not _LABEL_PART.match(key) or not _LABEL_PART.match(value):
        raise BadRequest(
            f"the {header} header takes key=value pairs of letters, digits and ._:/-"
        )
    return key.lower(), value
