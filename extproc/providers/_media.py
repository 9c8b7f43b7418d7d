"""Media sent inline in a request body, and what it is billed as.

Every family lets a client send an image, a recording or a document as a
base64 string: an OpenAI ``data:`` URL, Anthropic's ``source.data``,
Gemini's ``inlineData.data``, Bedrock's ``source.bytes``. Providers do not
bill those bytes as text: an image is a bounded number of tokens (OpenAI
tiles it, 85 + 170 per 512-pixel tile on gpt-4o; Claude bills about
width x height / 750 after scaling it to at most 1568 pixels, some 1,600
tokens; Gemini 258 per 768-pixel tile), and audio or video is billed by
its length in time (Gemini 32 tokens a second of audio, about 300 of
video). ``media_tokens`` tells such a payload apart by its first bytes,
whichever field carries it, and gives a bound on what it is billed.
"""

from __future__ import annotations

import binascii
import re

# Strings shorter than this are left to the text estimate: at most a few
# hundred tokens, not worth decoding.
MIN_MEDIA_CHARS = 1024
# More than any provider bills for one image at its default detail; models
# that inflate image tokens to price them (gpt-4o-mini) are settled at
# their metered count like any other under-estimate.
IMAGE_TOKENS = 4_000
# Decoded bytes per token of audio or video: 16 kbit/s Opus at Gemini's 32
# tokens a second, or video from about 150 kbit/s at its 300, lean high.
TIMED_MEDIA_BYTES_PER_TOKEN = 64

_DATA_URL = re.compile(r"data:[^,;]*(?:;[^,;]*)*;base64,")
# The alphabets of base64 and base64url, and the line breaks of MIME base64.
_BASE64 = re.compile(r"[A-Za-z0-9+/_\-\r\n]*={0,2}")
_URLSAFE = str.maketrans("-_", "+/", "\r\n")
_HEAD_CHARS = 24  # decodes to the 18 bytes that name every format below

_IMAGE_MAGIC = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",  # JPEG
    b"GIF87a",
    b"GIF89a",
    b"II*\x00",  # TIFF
    b"MM\x00*",
)
_IMAGE_RIFF = (b"WEBP",)
_IMAGE_BRANDS = (b"heic", b"heix", b"mif1", b"msf1", b"avif")
_TIMED_MAGIC = (
    b"ID3",  # MP3 with tags
    b"\xff\xfb",  # MP3 frames
    b"\xff\xf3",
    b"\xff\xf2",
    b"\xff\xf1",  # AAC (ADTS)
    b"\xff\xf9",
    b"OggS",
    b"fLaC",
    b"\x1a\x45\xdf\xa3",  # WebM, Matroska
)
_TIMED_RIFF = (b"WAVE", b"AVI ", b"AIFF")  # RIFF and AIFF's FORM


def media_tokens(text: str) -> int | None:
    """Tokens to assume for ``text`` when it is an inline image, audio or
    video payload (bare base64 or a ``data:`` URL) that is billed less than
    its text estimate (one token per three characters), else None.

    A document (a PDF) is None: providers bill its pages as text and page
    images, which the text estimate bounds well.
    """
    payload = _payload(text)
    kind = None if payload is None else _kind(payload)
    if payload is None or kind is None:
        return None

    if kind == "image":
        tokens = IMAGE_TOKENS
    else:
        decoded_bytes = len(payload) * 3 // 4
        tokens = -(-decoded_bytes // TIMED_MEDIA_BYTES_PER_TOKEN)

    return tokens if tokens < len(text) // 3 else None


def _payload(text: str) -> str | None:
    """The base64 part of ``text``, or None when it is not all base64."""
    if len(text) < MIN_MEDIA_CHARS:
        return None
    if text.startswith("data:"):
        prefix = _DATA_URL.match(text, 0, 256)
        if prefix is None:
            return None
        text = text[prefix.end() :]
    if _BASE64.fullmatch(text) is None:
        return None

    return text


def _kind(payload: str) -> str | None:
    """``image`` or ``timed`` (audio, video) from the payload's first bytes."""
    head_text = payload[: _HEAD_CHARS * 2].translate(_URLSAFE)[:_HEAD_CHARS]
    try:
        head = binascii.a2b_base64(head_text)
    except binascii.Error:
        return None

    if head.startswith(_IMAGE_MAGIC):
        return "image"
    if head.startswith(_TIMED_MAGIC):
        return "timed"
    if head.startswith((b"RIFF", b"FORM")):
        return _riff_kind(head[8:12])
    if head[4:8] == b"ftyp":
        return "image" if head[8:12] in _IMAGE_BRANDS else "timed"

    return None


def _riff_kind(form: bytes) -> str | None:
    if form in _IMAGE_RIFF:
        return "image"
    if form in _TIMED_RIFF:
        return "timed"

    return None
