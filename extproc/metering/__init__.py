"""Measuring a response: decoding, SSE parsing and the usage record."""

from extproc.metering.decoding import Decoder
from extproc.metering.sse import SseEvent, SseParser
from extproc.metering.usage import Usage

__all__ = ["Decoder", "SseEvent", "SseParser", "Usage"]
