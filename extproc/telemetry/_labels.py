"""A cap on the number of distinct values a metric label may take.

Identities, tools and models come from clients; left unchecked, one
misbehaving client could create a metric series per request. Each dimension
admits its first ``limit`` distinct values; later ones are reported as
``other``. Spans carry the true values: only metrics are capped.
"""

from __future__ import annotations

import logging
import threading

from extproc.telemetry._names import NO_VALUE, OVERFLOW_VALUE

log = logging.getLogger(__name__)


class LabelCap:
    """The admitted values of every capped dimension. Thread-safe: metric
    callbacks run on the exporter's thread."""

    def __init__(self, limit: int) -> None:
        self.limit = max(limit, 1)
        self._seen: dict[str, set[str]] = {}
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def value(self, dimension: str, value: str | None) -> str:
        """``value`` as a label of ``dimension``: itself, ``(none)`` when
        empty, or ``other`` once the dimension is full."""
        if not value:
            return NO_VALUE
        with self._lock:
            seen = self._seen.setdefault(dimension, set())
            if value in seen:
                return value
            if len(seen) < self.limit:
                seen.add(value)
                return value
            first_overflow = dimension not in self._warned
            self._warned.add(dimension)

        if first_overflow:
            log.warning(
                "metric label cap reached; further values are reported as other",
                extra={"dimension": dimension, "limit": self.limit},
            )
        return OVERFLOW_VALUE

    def admits(self, dimension: str, value: str) -> bool:
        """True when ``value`` has, or can still get, its own label."""
        return self.value(dimension, value) != OVERFLOW_VALUE
