"""Incremental content decoding: every coding, chains, corruption, bombs."""

from __future__ import annotations

import gzip
import zlib

import brotli
import pytest
import zstandard

from extproc.errors import MeteringError
from extproc.metering.decoding import Decoder

BODY = ('{"usage": {"prompt_tokens": 12}, "text": "héllo wörld"}\n' * 200).encode()


def decode(
    coding: str, data: bytes, *, step: int = 1, limit: int | None = None
) -> bytes:
    decoder = (
        Decoder(coding) if limit is None else Decoder(coding, max_output_bytes=limit)
    )
    out = [decoder.feed(data[i : i + step]) for i in range(0, len(data), step)]

    return b"".join(out) + decoder.flush()


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)

    return compressor.compress(data) + compressor.flush()


ENCODED = {
    "gzip": gzip.compress(BODY),
    "x-gzip": gzip.compress(BODY),
    "deflate": zlib.compress(BODY),
    "br": brotli.compress(BODY),
    "zstd": zstandard.ZstdCompressor().compress(BODY),
}


@pytest.mark.parametrize("coding", sorted(ENCODED))
def test_each_coding_decodes_fed_one_byte_at_a_time(coding: str) -> None:
    assert BODY == decode(coding, ENCODED[coding])


@pytest.mark.parametrize("coding", sorted(ENCODED))
def test_each_coding_decodes_fed_whole(coding: str) -> None:
    assert BODY == decode(coding, ENCODED[coding], step=len(ENCODED[coding]))


def test_raw_deflate_without_zlib_wrapper_decodes() -> None:
    assert BODY == decode("deflate", raw_deflate(BODY))


def test_gzip_with_several_members_decodes_all_of_them() -> None:
    assert BODY + b"tail" == decode(
        "gzip", gzip.compress(BODY) + gzip.compress(b"tail")
    )


def test_zstd_with_several_frames_decodes_all_of_them() -> None:
    compressor = zstandard.ZstdCompressor()
    data = compressor.compress(BODY) + compressor.compress(b"tail")

    assert BODY + b"tail" == decode("zstd", data, step=100)


def test_chained_codings_are_undone_last_first() -> None:
    data = brotli.compress(gzip.compress(BODY))

    assert BODY == decode("gzip, br", data, step=7)


def test_coding_names_are_case_insensitive() -> None:
    assert BODY == decode(" GZip ", gzip.compress(BODY), step=50)


@pytest.mark.parametrize("coding", ["", "identity", "identity, identity"])
def test_no_coding_passes_bytes_through(coding: str) -> None:
    assert BODY == decode(coding, BODY, step=33)


def test_an_unknown_coding_raises_metering_error() -> None:
    with pytest.raises(MeteringError, match="compress"):
        Decoder("compress")


def test_corrupt_gzip_raises_metering_error_with_its_cause() -> None:
    with pytest.raises(MeteringError) as caught:
        decode("gzip", b"\x1f\x8b\x08\x00garbage-garbage-garbage", step=100)

    assert isinstance(caught.value.__cause__, zlib.error)


@pytest.mark.parametrize("coding", ["br", "zstd"])
def test_corrupt_data_raises_metering_error(coding: str) -> None:
    with pytest.raises(MeteringError):
        decode(coding, b"\x00not compressed at all, not even close" * 4, step=100)


@pytest.mark.parametrize("coding", sorted(ENCODED))
def test_a_truncated_body_raises_metering_error_at_flush(coding: str) -> None:
    with pytest.raises(MeteringError, match="ended"):
        decode(coding, ENCODED[coding][:-10], step=64)


def test_an_empty_body_with_a_coding_decodes_to_nothing() -> None:
    assert b"" == Decoder("gzip").flush()


@pytest.mark.parametrize(
    "coding, bomb",
    [
        ("gzip", gzip.compress(b"\0" * (8 * 1024 * 1024))),
        ("br", brotli.compress(b"\0" * (8 * 1024 * 1024))),
        ("zstd", zstandard.ZstdCompressor().compress(b"\0" * (8 * 1024 * 1024))),
    ],
)
def test_output_past_the_cap_raises_metering_error(coding: str, bomb: bytes) -> None:
    with pytest.raises(MeteringError, match="inflates past"):
        decode(coding, bomb, step=len(bomb), limit=1024 * 1024)


def test_a_bomb_inside_a_chain_is_caught_in_the_inner_stage() -> None:
    bomb = brotli.compress(gzip.compress(b"\0" * (8 * 1024 * 1024)))

    with pytest.raises(MeteringError, match="gzip body inflates"):
        decode("gzip, br", bomb, step=len(bomb), limit=1024 * 1024)
