"""Incremental decoding of HTTP content codings, bounded against bombs.

``Decoder("gzip, br")`` undoes the codings a response lists in its
``content-encoding`` header, last applied first. Every stage caps its own
output at ``max_output_bytes``: a small body that would inflate past the cap
raises ``MeteringError`` instead of exhausting memory. Each stage also asks
its library for bounded output per call, so the overshoot before the check is
small (zlib and brotli: one buffer; zstd: what one input slice can yield).
"""

from __future__ import annotations

import zlib
from typing import Protocol

import brotli
import zstandard

from extproc.errors import MeteringError

DEFAULT_MAX_OUTPUT_BYTES = 64 * 1024 * 1024

_CHUNK_BYTES = 64 * 1024  # output asked of zlib and brotli per call
_ZSTD_SLICE_BYTES = 64  # zstd has no output cap per call: feed it small slices
# RFC 9659: a zstd content coding needs no more than an 8 MiB window.
_ZSTD_MAX_WINDOW_BYTES = 8 * 1024 * 1024


class _Stage(Protocol):
    def feed(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class _Budget:
    """Counts one stage's output and refuses to pass the cap."""

    def __init__(self, coding: str, limit: int) -> None:
        self.coding = coding
        self.limit = limit
        self.produced = 0

    def spend(self, out: bytes) -> bytes:
        self.produced += len(out)
        if self.produced > self.limit:
            raise MeteringError(
                f"{self.coding} body inflates past {self.limit} bytes; "
                "refusing to decode further"
            )

        return out


class _ZlibStage:
    """gzip (possibly multi-member) or deflate, zlib-wrapped or raw."""

    def __init__(self, coding: str, limit: int) -> None:
        self._coding = coding
        self._budget = _Budget(coding, limit)
        self._obj: zlib._Decompress | None = None
        self._head = b""  # deflate: bytes held until the wrapper is known

    def feed(self, data: bytes) -> bytes:
        if self._obj is None:
            data = self._head + data
            if self._coding == "deflate" and len(data) < 2:
                self._head = data
                return b""
            self._head = b""
            self._obj = zlib.decompressobj(self._wbits(data))
        try:
            return self._inflate(data)
        except zlib.error as exc:
            raise MeteringError(f"corrupt {self._coding} body: {exc}") from exc

    def flush(self) -> bytes:
        if self._head or (self._obj is not None and not self._obj.eof):
            raise MeteringError(f"{self._coding} body ended before its end mark")

        return b""

    def _wbits(self, head: bytes) -> int:
        if self._coding != "deflate":
            return 16 + zlib.MAX_WBITS
        # RFC 9110 says deflate is zlib-wrapped; some servers send it raw.
        cmf, flg = head[0], head[1]
        wrapped = cmf & 0x0F == 8 and (cmf << 8 | flg) % 31 == 0

        return zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS

    def _inflate(self, data: bytes) -> bytes:
        obj = self._obj
        assert obj is not None
        parts = []
        while True:
            out = obj.decompress(data, _CHUNK_BYTES)
            parts.append(self._budget.spend(out))
            data = obj.unconsumed_tail
            if obj.eof and obj.unused_data:
                if self._coding == "deflate":
                    raise MeteringError("bytes follow the end of a deflate body")
                data = obj.unused_data  # the next gzip member
                obj = self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)
            elif not data and len(out) < _CHUNK_BYTES:
                # Only a short output ends the loop: a full one may have left
                # output pending inside zlib.
                break

        return b"".join(parts)


class _BrotliStage:
    def __init__(self, limit: int) -> None:
        self._budget = _Budget("br", limit)
        self._obj = brotli.Decompressor()
        self._fed = False

    def feed(self, data: bytes) -> bytes:
        self._fed = self._fed or bool(data)
        try:
            parts = [self._budget.spend(self._obj.process(data, _CHUNK_BYTES))]
            # Past the output limit the decoder keeps the rest for calls with
            # no input, which must come before any further input.
            while parts[-1] and not self._obj.is_finished():
                parts.append(self._budget.spend(self._obj.process(b"", _CHUNK_BYTES)))
        except brotli.error as exc:
            raise MeteringError(f"corrupt br body: {exc}") from exc

        return b"".join(parts)

    def flush(self) -> bytes:
        if self._fed and not self._obj.is_finished():
            raise MeteringError("br body ended before its end mark")

        return b""


class _ZstdStage:
    def __init__(self, limit: int) -> None:
        self._budget = _Budget("zstd", limit)
        self._decompressor = zstandard.ZstdDecompressor(
            max_window_size=_ZSTD_MAX_WINDOW_BYTES
        )
        self._obj = self._decompressor.decompressobj()
        self._fed = False

    def feed(self, data: bytes) -> bytes:
        self._fed = self._fed or bool(data)
        parts = []
        try:
            while data:
                piece, data = data[:_ZSTD_SLICE_BYTES], data[_ZSTD_SLICE_BYTES:]
                if self._obj.eof:  # a further frame follows the last one
                    self._obj = self._decompressor.decompressobj()
                parts.append(self._budget.spend(self._obj.decompress(piece)))
                if self._obj.eof and self._obj.unused_data:
                    data = self._obj.unused_data + data
        except zstandard.ZstdError as exc:
            raise MeteringError(f"corrupt zstd body: {exc}") from exc

        return b"".join(parts)

    def flush(self) -> bytes:
        if self._fed and not self._obj.eof:
            raise MeteringError("zstd body ended before its end mark")

        return b""


class _IdentityStage:
    def feed(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


def _stage(coding: str, limit: int) -> _Stage:
    if coding in ("gzip", "x-gzip"):
        return _ZlibStage("gzip", limit)
    if coding == "deflate":
        return _ZlibStage("deflate", limit)
    if coding == "br":
        return _BrotliStage(limit)
    if coding == "zstd":
        return _ZstdStage(limit)
    raise MeteringError(f"unsupported content-encoding {coding!r}")


class Decoder:
    """Undoes ``content_encoding`` incrementally.

    ``feed`` returns the decoded bytes available so far; ``flush`` returns the
    rest at end of body. Both raise ``MeteringError`` for corrupt or truncated
    data or output past ``max_output_bytes``; the constructor raises it for an
    unknown coding. An empty header or ``identity`` passes bytes through.
    """

    def __init__(
        self,
        content_encoding: str,
        *,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    ) -> None:
        codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
        codings = [c for c in codings if c != "identity"]
        # Listed in the order applied, so undone from the last one.
        self._stages: list[_Stage] = [
            _stage(c, max_output_bytes) for c in reversed(codings)
        ]
        if not self._stages:
            self._stages = [_IdentityStage()]

    def feed(self, data: bytes) -> bytes:
        for stage in self._stages:
            data = stage.feed(data)

        return data

    def flush(self) -> bytes:
        data = b""
        for stage in self._stages:
            data = stage.feed(data) + stage.flush() if data else stage.flush()

        return data
