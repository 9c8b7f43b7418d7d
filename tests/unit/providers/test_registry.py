"""The provider registry: names, aliases, unknown names."""

from __future__ import annotations

import pytest

from extproc.credentials import CLIENT_CREDENTIAL_HEADERS
from extproc.errors import ConfigError
from extproc.providers import FAMILIES, family


@pytest.mark.parametrize(
    "name", ["openai", "azure-openai", "anthropic", "gemini", "vertex", "bedrock"]
)
def test_each_family_is_registered_under_its_own_name(name: str) -> None:
    assert name == family(name).name


def test_openai_compatible_is_an_alias_of_openai() -> None:
    assert family("openai") is family("openai-compatible")


def test_an_unknown_name_raises_config_error_listing_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="known: anthropic"):
        family("cohere")


def test_every_header_a_family_injects_is_one_the_flow_strips() -> None:
    injected = {
        header
        for provider in FAMILIES.values()
        for header in provider.credential_headers("secret")
    }

    assert injected <= set(CLIENT_CREDENTIAL_HEADERS)
