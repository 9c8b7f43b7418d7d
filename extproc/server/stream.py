"""The ext_proc gRPC service: one stream per HTTP request.

This is the one place that turns errors into answers. A ``Refusal`` raised
while the request is being decided becomes an Envoy ``ImmediateResponse`` in
the provider's own error shape; any other error is logged and answered with a
generic message. After response headers have gone out, nothing is refused:
metering problems are recorded, never raised into the stream.

Envoy cancels the gRPC stream instead of half-closing it, so a stream may end
with ``CancelledError`` at any await: settlement runs in a detached task from
``finally``, and the server waits for those tasks when it stops.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from extproc.budgets.journal import Journal
from extproc.budgets.store import BudgetStore
from extproc.errors import GatewayFailure, Refusal, StoreUnavailable
from extproc.server import messages
from extproc.server.call import REQUEST_ID_HEADER, Call
from extproc.server.runtime import Runtime
from extproc.telemetry import Telemetry

log = logging.getLogger(__name__)

REFUSAL_HEADER = "x-tollgate-refusal"
# Why Envoy answered as it did: "via_upstream" for the provider's own answer,
# else Envoy's reason for answering itself (envoy/*.yaml lists it among the
# filter's response_attributes).
CODE_DETAILS_ATTRIBUTE = "response.code_details"


class ExternalProcessor(pb_grpc.ExternalProcessorServicer):
    """Answers Envoy's ext_proc streams for the policy in force."""

    def __init__(
        self, runtime: Callable[[], Runtime], journal: Journal, telemetry: Telemetry
    ) -> None:
        self._runtime = runtime
        self._journal = journal
        self._telemetry = telemetry
        self._settlements: set[asyncio.Task[None]] = set()
        self._live: dict[str, Call] = {}

    async def Process(
        self,
        request_iterator: AsyncIterator[pb.ProcessingRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.ProcessingResponse]:
        call = Call(
            self._runtime(),
            self._journal,
            self._telemetry,
            trace_context=_trace_context(context),
        )
        self._live[call.request_id] = call
        try:
            async for message in request_iterator:
                yield await self._answer(call, message)
                if call.finished:
                    break
        finally:
            self._settle_later(call)

    async def keep_leases(self, interval_ms: int) -> None:
        """Extend the leases of the calls in flight every ``interval_ms``.

        A call outliving its lease (a long stream) would otherwise be charged
        at its estimate by the sweep while it runs. One Redis command per
        tenant and tick, whatever the number of calls.
        """
        while True:
            await asyncio.sleep(interval_ms / 1000)
            await self._extend_leases()

    async def _extend_leases(self) -> None:
        by_store: dict[int, tuple[BudgetStore, list[str]]] = {}
        for call in list(self._live.values()):
            if call.reserved is not None:
                store = call.runtime.store
                by_store.setdefault(id(store), (store, []))[1].append(call.request_id)
        now_ms = int(time.time() * 1000)
        for store, request_ids in by_store.values():
            try:
                await store.extend_leases(request_ids, now_ms)
            except StoreUnavailable as exc:
                self._telemetry.record_redis_error("extend_leases")
                log.warning("lease extension failed", extra={"reason": str(exc)})

    async def drain(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for settlements still under way."""
        if self._settlements:
            await asyncio.wait(set(self._settlements), timeout=timeout_s)

    async def _answer(
        self, call: Call, message: pb.ProcessingRequest
    ) -> pb.ProcessingResponse:
        kind = message.WhichOneof("request")
        try:
            if call.trace is None:
                return await self._dispatch(call, kind, message)
            with call.trace.phase(kind or "unknown"):
                return await self._dispatch(call, kind, message)
        except Refusal as refusal:
            call.refuse()
            return _refusal_reply(call, refusal)
        except Exception:
            log.exception(
                "ext_proc message failed", extra={"request_id": call.request_id}
            )
            if kind in ("request_headers", "request_body"):
                call.refuse()
                return _refusal_reply(call, _internal_error())
            return messages.empty_reply(kind or "request_headers")

    async def _dispatch(
        self, call: Call, kind: str | None, message: pb.ProcessingRequest
    ) -> pb.ProcessingResponse:
        if kind == "request_headers":
            return await call.on_request_headers(message.request_headers)
        if kind == "request_body":
            return await call.on_request_body(message.request_body)
        if kind == "response_headers":
            details = messages.attribute(message, CODE_DETAILS_ATTRIBUTE)
            return call.on_response_headers(message.response_headers, details)
        if kind == "response_body":
            return call.on_response_body(message.response_body)
        return messages.empty_reply(kind or "request_headers")

    def _settle_later(self, call: Call) -> None:
        task = asyncio.get_running_loop().create_task(_settle(call))
        self._settlements.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._settlements.discard(finished)
            self._live.pop(call.request_id, None)

        task.add_done_callback(done)


async def _settle(call: Call) -> None:
    """Settle one call; a Redis failure lands in the journal inside close."""
    try:
        await call.close()
    except Exception:
        log.exception("settlement failed", extra={"request_id": call.request_id})


def _trace_context(context: grpc.aio.ServicerContext) -> dict[str, str]:
    """The W3C trace context Envoy's tracer puts on the ext_proc stream.

    Envoy injects it into the gRPC call it makes (its span for the ext_proc
    exchange), not into the HTTP headers it sends us; a span started from
    it joins Envoy's trace.
    """
    try:
        metadata = context.invocation_metadata() or ()
    except Exception:  # telemetry never fails a request
        return {}
    return {
        key: value
        for key, value in metadata
        if key in ("traceparent", "tracestate") and isinstance(value, str)
    }


def _refusal_reply(call: Call, refusal: Refusal) -> pb.ProcessingResponse:
    family = call.route.family if call.route else None
    if family is not None:
        body = family.error_body(refusal.status, refusal.code, refusal.message)
    else:
        body = _generic_error_body(refusal)
    headers = {"content-type": "application/json", **refusal.headers}
    headers[REQUEST_ID_HEADER] = call.request_id
    # Every provider's error shape carries a message, not all a code: the
    # header gives the reason to clients and dashboards alike.
    headers[REFUSAL_HEADER] = refusal.code
    log.info(
        "call refused",
        extra={
            "request_id": call.request_id,
            "identity": call.identity,
            "status": refusal.status,
            "reason": refusal.code,
            "scope": getattr(refusal, "scope", None),
        },
    )
    call.finish_trace(
        decision=refusal.code,
        scope=getattr(refusal, "scope", None),
        status=refusal.status,
    )
    metadata = {
        "request_id": call.request_id,
        "decision": refusal.code,
        "identity": call.identity or "",
    }
    return messages.immediate_reply(
        refusal.status,
        body,
        headers,
        details=f"tollgate_{refusal.code}",
        metadata=metadata,
    )


def _generic_error_body(refusal: Refusal) -> bytes:
    error = {"error": {"type": refusal.code, "message": refusal.message}}
    return json.dumps(error).encode()


def _internal_error() -> Refusal:
    return GatewayFailure("the gateway failed to process this request")
