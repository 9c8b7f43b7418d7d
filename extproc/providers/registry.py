"""The provider families, by the name a route's configuration uses.

``family(name)`` returns the shared instance for ``name``; the instances are
stateless, so one serves every request.
"""

from __future__ import annotations

from extproc.errors import ConfigError
from extproc.providers.anthropic import AnthropicFamily
from extproc.providers.azure_openai import AzureOpenAIFamily
from extproc.providers.base import ProviderFamily
from extproc.providers.bedrock import BedrockFamily
from extproc.providers.gemini import GeminiFamily, VertexFamily
from extproc.providers.openai import OpenAIFamily

_OPENAI = OpenAIFamily()

FAMILIES: dict[str, ProviderFamily] = {
    "openai": _OPENAI,
    "openai-compatible": _OPENAI,  # an alias: the same wire format
    "azure-openai": AzureOpenAIFamily(),
    "anthropic": AnthropicFamily(),
    "gemini": GeminiFamily(),
    "vertex": VertexFamily(),
    "bedrock": BedrockFamily(),
}


def family(name: str) -> ProviderFamily:
    """The family called ``name``; ``ConfigError`` when there is none."""
    try:
        return FAMILIES[name]
    except KeyError:
        known = ", ".join(sorted(FAMILIES))
        raise ConfigError(f"unknown provider family {name!r}; known: {known}") from None
