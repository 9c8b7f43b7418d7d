"""A request's provider: by path prefix, then by host, never two at once."""

from __future__ import annotations

import textwrap

import pytest

from extproc.credentials import CredentialReader
from extproc.errors import RouteConflict
from extproc.policy import parse_policy
from extproc.server.runtime import Runtime

POLICY = textwrap.dedent("""
    providers:
      openai: {family: openai, route_prefix: /openai, hosts: [api.openai.com]}
      anthropic: {family: anthropic, route_prefix: /anthropic,
                  hosts: [api.anthropic.com]}
    users:
      default: {budget: {capacity_usd: "5"}}
""")


@pytest.fixture(scope="module")
def runtime() -> Runtime:
    return Runtime(parse_policy(POLICY), CredentialReader(), store=None)


def _found(runtime: Runtime, path: str, authority: str) -> tuple[str, str] | None:
    found = runtime.route(path, authority)
    return None if found is None else (found[0].name, found[1])


@pytest.mark.parametrize(
    ("path", "authority", "expected"),
    [
        ("/openai/v1/chat/completions", "gateway", ("openai", "/v1/chat/completions")),
        ("/openai/v1/models", "api.openai.com:443", ("openai", "/v1/models")),
        ("/v1/messages", "API.ANTHROPIC.COM", ("anthropic", "/v1/messages")),
        ("/v1/messages", "[::1]:10000", None),
        ("/v1/messages", "", None),
    ],
)
def test_prefix_first_then_host(runtime, path, authority, expected) -> None:
    assert expected == _found(runtime, path, authority)


@pytest.mark.parametrize(
    ("path", "authority"),
    [
        ("/openai/v1/chat/completions", "api.anthropic.com"),
        ("/anthropic/v1/messages", "Api.OpenAI.com:8443"),
    ],
)
def test_a_prefix_and_a_host_of_two_providers_conflict(runtime, path, authority) -> None:
    with pytest.raises(RouteConflict, match="names provider"):
        runtime.route(path, authority)
