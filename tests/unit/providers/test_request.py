"""Request-body helpers every family shares: the input estimate."""

from __future__ import annotations

import base64
import json
import time

import pytest

from extproc.providers._request import estimate_input
from extproc.providers.base import InputEstimate

# The first bytes of each format; the rest of a payload is filler.
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"
WAV = b"RIFF\x24\x00\x10\x00WAVEfmt "
MP4 = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00"
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"


def _payload(magic: bytes, size: int) -> str:
    return base64.b64encode(magic + bytes(size - len(magic))).decode()


def _estimate(obj: dict) -> int:
    """The reservation's estimate: one token per three bytes of text."""
    body = json.dumps(obj).encode()

    return estimate_input(body).tokens(3)


def test_text_is_estimated_at_one_token_per_three_body_bytes() -> None:
    obj = {"messages": [{"role": "user", "content": "x" * 3000}]}

    assert -(-len(json.dumps(obj)) // 3) == _estimate(obj)


@pytest.mark.parametrize(
    "content",
    [
        # OpenAI chat, Anthropic, Gemini and Bedrock Converse carry images so.
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,{b}"}},
        {"type": "image", "source": {"type": "base64", "data": "{b}"}},
        {"inlineData": {"mimeType": "image/jpeg", "data": "{b}"}},
        {"image": {"format": "png", "source": {"bytes": "{b}"}}},
    ],
)
def test_a_base64_image_counts_as_one_bounded_image_not_as_text(content) -> None:
    magic = JPEG if "jpeg" in json.dumps(content) else PNG
    payload = _payload(magic, 5_000_000)
    part = json.loads(json.dumps(content).replace("{b}", payload))
    obj = {"messages": [{"content": [part]}]}

    assert 4_000 < _estimate(obj) <= 4_100


def test_an_image_smaller_than_its_allowance_counts_as_its_length() -> None:
    payload = _payload(PNG, 1_500)
    obj = {"image": payload}

    assert -(-len(json.dumps(obj)) // 3) == _estimate(obj)


def test_audio_and_video_count_by_decoded_bytes_at_64_bytes_a_token() -> None:
    audio = {"input_audio": {"data": _payload(WAV, 3_200_000), "format": "wav"}}
    video = {"inlineData": {"mimeType": "video/mp4", "data": _payload(MP4, 6_400)}}

    assert 50_000 < _estimate(audio) <= 50_020
    assert 100 < _estimate(video) <= 120


def test_a_pdf_is_estimated_as_text_because_providers_bill_its_pages_as_text() -> None:
    obj = {"source": {"type": "base64", "data": _payload(PDF, 300_000)}}

    assert 130_000 < _estimate(obj)


def test_text_that_starts_like_an_image_but_is_not_base64_counts_as_text() -> None:
    text = _payload(PNG, 24) + " and then a long prompt" * 1_000
    obj = {"content": text}

    assert -(-len(json.dumps(obj)) // 3) == _estimate(obj)


def test_a_payload_split_into_mime_lines_is_still_an_image() -> None:
    payload = _payload(PNG, 3_000_000)
    lines = "\n".join(payload[i : i + 76] for i in range(0, len(payload), 76))
    obj = {"data": lines}

    assert 4_000 < _estimate(obj) <= 4_100


def test_an_image_whose_slashes_are_escaped_is_still_one_image() -> None:
    obj = {"data": "data:image/png;base64," + _payload(PNG, 3_000_000)}
    body = json.dumps(obj).replace("/", "\\/").encode()  # as PHP encodes

    assert 4_000 < estimate_input(body).tokens(3) <= 4_100


def test_text_estimate_and_media_tokens_add_up() -> None:
    assert 4 + 7 == InputEstimate(text_bytes=13, media_tokens=7).tokens(4)


def test_millions_of_small_values_are_estimated_in_a_fraction_of_a_second() -> None:
    body = b'{"input": [' + b",".join([b"1"] * 3_000_000) + b"]}"

    started = time.perf_counter()
    estimate = estimate_input(body)

    assert time.perf_counter() - started < 0.5
    assert InputEstimate(len(body)) == estimate
