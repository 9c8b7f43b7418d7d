"""Provider families: one small module per wire format.

The public surface: the interface (``ProviderFamily`` and the values it
trades in) and the registry (``FAMILIES``, ``family``).

The registry is loaded on first use: the family modules build on
``extproc.metering.readers``, which itself needs ``extproc.providers.base``,
so importing them here eagerly would make the two packages import each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from extproc.providers.base import (
    Endpoint,
    InputEstimate,
    ProviderFamily,
    Reading,
    RequestFacts,
    UsageReader,
)

if TYPE_CHECKING:
    from extproc.providers.registry import (
        FAMILIES,
        family,
    )

_REGISTRY_NAMES = frozenset({"FAMILIES", "family"})


def __getattr__(name: str) -> Any:
    if name in _REGISTRY_NAMES:
        from extproc.providers import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FAMILIES",
    "Endpoint",
    "InputEstimate",
    "ProviderFamily",
    "Reading",
    "RequestFacts",
    "UsageReader",
    "family",
]
