"""Building and reading Envoy ext_proc protobuf messages.

Envoy delivers header values in ``raw_value`` (bytes) and leaves ``value``
empty; mutations here are sent as ``raw_value`` too.
"""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2

OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
# The key under which Envoy sends the attributes the filter's configuration
# lists (request_attributes, response_attributes).
ATTRIBUTES_KEY = "envoy.filters.http.ext_proc"
BODY_NONE = processing_mode_pb2.ProcessingMode.NONE
METADATA_NAMESPACE = "tollgate"


def header_map(headers: pb.HttpHeaders) -> dict[str, str]:
    """Lower-cased header names to values; repeated headers joined by ','.

    Bytes that are not UTF-8 are kept as latin-1 so that nothing raises here;
    validation of values happens where they are used.
    """
    result: dict[str, str] = {}
    for header in headers.headers.headers:
        raw = header.raw_value or header.value.encode()
        value = _text(raw)
        key = header.key.lower()
        result[key] = f"{result[key]},{value}" if key in result else value
    return result


def header_values(headers: pb.HttpHeaders, name: str) -> list[bytes]:
    """The raw values of every copy of the header ``name`` (lower case)."""
    return [
        header.raw_value or header.value.encode()
        for header in headers.headers.headers
        if header.key.lower() == name
    ]


def attribute(message: pb.ProcessingRequest, name: str) -> str:
    """The Envoy attribute ``name`` sent with ``message`` as text; empty when
    Envoy sent none (the filter does not list it, or it has no value)."""
    if ATTRIBUTES_KEY not in message.attributes:
        return ""
    fields = message.attributes[ATTRIBUTES_KEY].fields
    return fields[name].string_value if name in fields else ""


def header_mutation(
    set_headers: dict[str, str] | None = None, remove: list[str] | tuple[str, ...] = ()
) -> pb.HeaderMutation:
    mutation = pb.HeaderMutation(remove_headers=list(remove))
    for key, value in (set_headers or {}).items():
        mutation.set_headers.append(
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key=key, raw_value=value.encode()),
                append_action=OVERWRITE,
            )
        )
    return mutation


def request_headers_reply(
    mutation: pb.HeaderMutation | None = None,
    *,
    skip_response_body: bool = False,
    metadata: dict[str, Any] | None = None,
) -> pb.ProcessingResponse:
    reply = pb.ProcessingResponse(
        request_headers=pb.HeadersResponse(response=_common(mutation))
    )
    if skip_response_body:
        reply.mode_override.response_body_mode = BODY_NONE
    return _with_metadata(reply, metadata)


def request_body_reply(
    body: bytes | None = None,
    set_headers: dict[str, str] | None = None,
    *,
    metadata: dict[str, Any] | None = None,
) -> pb.ProcessingResponse:
    common = _common(header_mutation(set_headers) if set_headers else None)
    if body is not None:
        common.body_mutation.body = body
    reply = pb.ProcessingResponse(request_body=pb.BodyResponse(response=common))
    return _with_metadata(reply, metadata)


def response_headers_reply(
    set_headers: dict[str, str] | None = None,
    *,
    skip_body: bool = False,
    metadata: dict[str, Any] | None = None,
) -> pb.ProcessingResponse:
    mutation = header_mutation(set_headers) if set_headers else None
    reply = pb.ProcessingResponse(
        response_headers=pb.HeadersResponse(response=_common(mutation))
    )
    if skip_body:
        reply.mode_override.response_body_mode = BODY_NONE
    return _with_metadata(reply, metadata)


def response_body_reply(
    metadata: dict[str, Any] | None = None,
) -> pb.ProcessingResponse:
    return _with_metadata(
        pb.ProcessingResponse(response_body=pb.BodyResponse()), metadata
    )


def empty_reply(kind: str) -> pb.ProcessingResponse:
    """A reply that changes nothing, for a message of ``kind``."""
    if kind in ("request_headers", "response_headers"):
        return pb.ProcessingResponse(**{kind: pb.HeadersResponse()})
    if kind in ("request_body", "response_body"):
        return pb.ProcessingResponse(**{kind: pb.BodyResponse()})
    return pb.ProcessingResponse(**{kind: pb.TrailersResponse()})


def immediate_reply(
    status: int,
    body: bytes,
    headers: dict[str, str],
    *,
    details: str,
    metadata: dict[str, Any] | None = None,
) -> pb.ProcessingResponse:
    reply = pb.ProcessingResponse(
        immediate_response=pb.ImmediateResponse(
            status=http_status_pb2.HttpStatus(code=status),
            headers=header_mutation(headers),
            body=body,
            details=details,
        )
    )
    return _with_metadata(reply, metadata)


def dynamic_metadata(values: dict[str, Any]) -> struct_pb2.Struct:
    """Metadata for Envoy under the ``tollgate`` namespace; values as strings
    so that integers (money) print exactly in access logs."""
    struct = struct_pb2.Struct()
    struct.update({METADATA_NAMESPACE: {k: str(v) for k, v in values.items()}})
    return struct


def _with_metadata(
    reply: pb.ProcessingResponse, metadata: dict[str, Any] | None
) -> pb.ProcessingResponse:
    """``reply`` carrying ``metadata`` for Envoy, if there is any.

    Any reply may carry it, a request-phase one too. Envoy merges each
    reply's fields into the namespace it holds for the request (a later
    value replaces an earlier one of the same key), and an access log line
    shows what had arrived when Envoy wrote it.
    """
    if metadata:
        reply.dynamic_metadata.CopyFrom(dynamic_metadata(metadata))
    return reply


def _common(mutation: pb.HeaderMutation | None) -> pb.CommonResponse:
    common = pb.CommonResponse()
    if mutation is not None:
        common.header_mutation.CopyFrom(mutation)
    return common


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")
