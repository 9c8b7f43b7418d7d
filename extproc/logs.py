"""Structured logging: one JSON object per line, fields from ``extra``."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """Renders a record and its ``extra`` fields as one JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        entry.update(
            (key, value)
            for key, value in record.__dict__.items()
            if key not in _STANDARD
        )
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)

        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """``event key=value ...`` for people reading a terminal.

    A value with spaces, ``=``, quotes or control characters is written as a
    JSON string, so that a client-chosen value (a model name, an identity)
    cannot forge a field or a whole line.
    """

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(
            f"{key}={_quoted(value)}"
            for key, value in record.__dict__.items()
            if key not in _STANDARD
        )
        level = record.levelname.lower()
        line = f"{level:7} {record.name}: {record.getMessage()} {fields}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line.rstrip()


def _quoted(value: object) -> str:
    text = str(value)
    if text and text.isprintable() and not any(c in text for c in " =\"'"):
        return text
    return json.dumps(text)


def configure(level: str = "INFO", fmt: str = "json") -> None:
    """Send every log line of the process to stderr in ``fmt``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
