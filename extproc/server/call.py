"""One AI call as it passes the gateway: admit, forward, meter, settle.

A ``Call`` lives for one ext_proc stream. Its request-side methods may raise
``Refusal`` (the stream handler answers the client); its response-side
methods never raise, because after the response headers have gone to the
client an error can only reset the stream. ``close`` settles the call
exactly once, whatever happened before.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from extproc.budgets.journal import Journal, JournalFull
from extproc.budgets.scopes import Caller
from extproc.budgets.store import UNIT_MICRO_USD, Attribution, BucketSpec, Settlement
from extproc.credentials import client_credential_headers, without_query_credentials
from extproc.errors import (
    BadRequest,
    BudgetExceeded,
    CredentialError,
    EndpointNotAllowed,
    IdentityInvalid,
    RouteUnknown,
    ServiceUnavailable,
    StoreUnavailable,
    UnsupportedEncoding,
)
from extproc.identity import identity_from, labels_from, tool_from
from extproc.keys import presented_key
from extproc.metering.charge import (
    ESTIMATED_FAULT,
    REFUSED,
    CallFacts,
    Charge,
    decide_charge,
)
from extproc.metering.meter import ResponseMeter
from extproc.metering.usage import Usage
from extproc.pricing import Price
from extproc.providers.base import Endpoint, InputEstimate, Reading, RequestFacts
from extproc.server import messages
from extproc.server.runtime import Route, Runtime
from extproc.telemetry import CallRecord, CallTrace, Telemetry

log = logging.getLogger(__name__)

GATEWAY_HEADER_PREFIX = "x-tollgate-"
# Headers by which Google's and other front ends take a POST as another
# method: the gateway judges the method it sees, so none may go on.
METHOD_OVERRIDE_HEADERS = (
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
)
REQUEST_ID_HEADER = GATEWAY_HEADER_PREFIX + "request-id"
MAX_MODEL_LENGTH = 256
_READ_METHODS = ("GET", "HEAD", "OPTIONS")
# Envoy's response code details when it answers itself for a provider that
# had the request: the connection dropped, or no answer came in time.
_LOST_AFTER_SENDING = (
    "upstream_reset_before_response_started",
    "upstream_response_timeout",
    "upstream_per_try_timeout",
    "upstream_per_try_idle_timeout",
    "stream_idle_timeout",
)
# Reset reasons within those details that mean the request never left: no
# connection was made, the circuit breaker held it, or the provider's HTTP/2
# server refused the stream unprocessed.
_NEVER_SENT = ("connection_failure", "connection_timeout", "overflow", "refused")


class Call:
    """The state of one call, fed by the ext_proc messages of its stream."""

    def __init__(
        self,
        runtime: Runtime,
        journal: Journal,
        telemetry: Telemetry,
        *,
        trace_context: dict[str, str] | None = None,
    ) -> None:
        self.request_id = uuid.uuid4().hex
        self.runtime = runtime
        self._store = runtime.store
        self._journal = journal
        self._telemetry = telemetry
        self.trace: CallTrace | None = None
        self._trace_context = trace_context or {}
        self.unreserved = False  # admitted while the store was unreachable
        self.started = time.monotonic()

        self.route: Route | None = None
        self._request_headers: dict[str, str] = {}
        self.endpoint: Endpoint | None = None
        self.identity: str | None = None
        self.caller: Caller | None = None
        self.labels: tuple[tuple[str, str], ...] = ()
        self.upstream_path = ""
        self.method = ""
        self.facts: RequestFacts | None = None
        self.model = "unknown"
        self.estimate_micro_usd = 0
        self.reserved: list[BucketSpec] | None = None
        self._buckets: list[BucketSpec] = []
        self._original_body = b""
        self.levels: list[int] = []
        self.output_cap_tokens = 0

        self.status: int | None = None
        self.upstream_lost = False  # Envoy answered for a provider that had it
        self._meter: ResponseMeter | None = None
        self._reading: Reading | None = None
        self.response_complete = False

        self.finished = False
        self.refused = False
        self.charge: Charge | None = None
        self.cost_micro_usd: int | None = None
        self.price_source: str | None = None
        self._settled = False

    # Request side: may raise Refusal.

    async def on_request_headers(
        self, message: pb.HttpHeaders
    ) -> pb.ProcessingResponse:
        """Route, identify, swap credentials. Bodyless calls are not metered."""
        headers = messages.header_map(message)
        # Envoy's own span (on the gRPC stream) first, else the client's.
        context = (
            self._trace_context if "traceparent" in self._trace_context else headers
        )
        self.trace = self._telemetry.start_call(
            traceparent=context.get("traceparent"), tracestate=context.get("tracestate")
        )
        self.method = headers.get(":method", "")
        self._request_headers = headers
        self.route, upstream_path = self._route(headers)
        self.upstream_path = without_query_credentials(upstream_path)
        self.identity, key_tool = await self._identify(headers, message)
        policy = self.runtime.policy
        tool = key_tool or tool_from(headers, policy.tools)
        self.caller = self.runtime.caller(self.identity, tool)
        self.labels = labels_from(headers, policy.attribution)
        self.endpoint = self._endpoint(bodyless=message.end_of_stream)

        mutation = await self._credential_mutation(headers.get(":path", ""))

        # The access log line needs the request id and the caller even if
        # the client leaves before any answer: they go to Envoy now.
        return messages.request_headers_reply(
            mutation,
            skip_response_body=self.endpoint is None,
            metadata=self.access_log_fields(),
        )

    async def on_request_body(self, message: pb.HttpBody) -> pb.ProcessingResponse:
        """Read the body, reserve the estimate; rewrite the body if needed."""
        if self.endpoint is None or self.route is None:
            return messages.request_body_reply()
        body = bytes(message.body)
        self.facts = self.route.family.read_request(
            self.endpoint, self.upstream_path, body
        )
        if self.facts.body is not None and not self.route.config.rewrite_stream_usage:
            self.facts = replace(self.facts, body=None)
        self.model = _model_name(self.facts.model)
        self._original_body = body

        await self._reserve_or_downgrade()

        sent = body if self.facts.body is None else self.facts.body
        set_headers = await self._signature(sent)
        if self.facts.body is not None:
            set_headers["content-length"] = str(len(sent))
        return messages.request_body_reply(
            self.facts.body,
            set_headers=set_headers or None,
            metadata=self.access_log_fields(),
        )

    # Response side: never raises.

    def on_response_headers(
        self, message: pb.HttpHeaders, details: str = ""
    ) -> pb.ProcessingResponse:
        """Note the status and open the usage reader for the body.

        ``details`` is Envoy's response code details. Where they say Envoy
        answered (a 503, a 504) for a provider that had taken the request,
        the call is charged as one left unanswered, not as the provider's
        refusal: the provider may have run and billed it.
        """
        headers = messages.header_map(message)
        self.status = _status(headers.get(":status", ""))
        self.upstream_lost = _lost_after_sending(details)
        set_headers = {REQUEST_ID_HEADER: self.request_id}
        if self.reserved is None:
            self.finished = True
            log.info("call passed through unmetered", extra=self._log_fields())
            self.finish_trace(decision="unmetered")
            return messages.response_headers_reply(
                set_headers, skip_body=True, metadata=self.access_log_fields()
            )

        self._open_reader(headers)
        if message.end_of_stream:
            self._finish_body()
        # An answer without a body is priced here: its cost goes to the log.
        return messages.response_headers_reply(
            set_headers, metadata=self.access_log_fields()
        )

    def on_response_body(self, message: pb.HttpBody) -> pb.ProcessingResponse:
        """Meter one chunk, passing it on unchanged; price at end of body,
        or at the chunk with the body's last event (``[DONE]``)."""
        if self._meter is not None:
            self._meter.feed(bytes(message.body))
        if message.end_of_stream:
            self._finish_body()
            return messages.response_body_reply(self.access_log_fields())
        if self.charge is None and self._meter is not None and self._meter.ended:
            # SDKs hang up once they have read the last event, often before
            # the end of the body arrives: the access log gets the cost now.
            self._price()
            return messages.response_body_reply(self.access_log_fields())
        return messages.response_body_reply()

    # Settlement.

    def refuse(self) -> None:
        """The gateway answers this call itself: it will not reach the
        provider, so a reservation already made is given back on close."""
        self.finished = True
        self.refused = True

    async def close(self) -> None:
        """Settle exactly once. Safe to call any number of times."""
        if self._settled or self.reserved is None:
            return
        self._settled = True
        if self.refused and self.status is None:
            await self._release()
            return
        if self.charge is None:
            self._price()

        settlement = self._settlement()
        attribution = self.attribution()
        try:
            booked = await self._store.settle(
                settlement, self.reserved, attribution, reserved=not self.unreserved
            )
        except StoreUnavailable as exc:
            self._telemetry.record_redis_error("settle")
            await self._journal_settlement(settlement, attribution, exc)
        else:
            log.info(
                "call settled" if booked else "call not settled",
                extra=self._log_fields(),
            )
        self.finish_trace(decision="allowed")

    def finish_trace(
        self, *, decision: str, scope: str | None = None, status: int | None = None
    ) -> None:
        """End this call's span and record its metrics (never raises)."""
        if self.trace is None:
            return
        charge = self.charge
        endpoint = self.endpoint
        self.trace.finish(
            CallRecord(
                request_id=self.request_id,
                identity=self.identity or "",
                team=(self.caller.team or "") if self.caller else "",
                project=(self.caller.project or "") if self.caller else "",
                tool=(self.caller.tool or "") if self.caller else "",
                provider=self.route.name if self.route else "",
                provider_family=self.route.config.family if self.route else "",
                operation=endpoint.operation if endpoint else "",
                request_model=self.facts.model if self.facts else None,
                response_model=self._reading.model if self._reading else None,
                usage=charge.usage if charge else None,
                cost_micro_usd=self.cost_micro_usd or 0,
                outcome=charge.outcome if charge else "",
                estimated=charge.estimated if charge else False,
                decision=decision,
                scope=scope,
                status=status if status is not None else self.status,
                finish_reasons=self._reading.finish_reasons if self._reading else (),
                price_source=self.price_source,
            )
        )

    async def _release(self) -> None:
        """Give the reservation back; if Redis cannot take that now, journal
        a settlement of nothing, which gives it back when replayed."""
        assert self.reserved is not None
        if self.unreserved:
            return
        try:
            await self._store.release(self.request_id, self.reserved)
        except StoreUnavailable as exc:
            self._telemetry.record_redis_error("release")
            self.charge = Charge(None, False, REFUSED)
            self.cost_micro_usd = 0
            await self._journal_settlement(self._settlement(), self.attribution(), exc)
            return
        log.info("reservation released", extra=self._log_fields())

    async def _journal_settlement(
        self, settlement: Settlement, attribution: Attribution, exc: StoreUnavailable
    ) -> None:
        assert self.reserved is not None
        fields = {**self._log_fields(), "reason": str(exc)}
        try:
            await self._journal.append(
                settlement, self.reserved, attribution, reserved=not self.unreserved
            )
        except JournalFull:
            log.error(
                "settlement lost: redis unreachable and journal full", extra=fields
            )
            return
        except OSError as write_failure:  # a full disk, a read-only volume
            fields["journal_error"] = str(write_failure)
            log.error(
                "settlement lost: redis unreachable and journal unwritable",
                extra=fields,
            )
            return
        log.warning("call settled into the local journal", extra=fields)

    def access_log_fields(self) -> dict[str, Any]:
        """What Envoy's access log gets as dynamic metadata: what is known
        of the call so far.

        The request id and identity once the request headers are read; the
        decision (``pending`` until a metered call is admitted, then
        ``allowed``; ``unmetered`` for a pass-through); the cost and outcome
        once priced. A call whose line Envoy writes before it is priced (a
        client that hangs up before the last event) is settled later, so its
        cost is only in the ledger.
        """
        fields: dict[str, Any] = {
            "request_id": self.request_id,
            "identity": self.identity or "",
        }
        decision = self._decision()
        if decision is not None:
            fields["decision"] = decision
        if self.cost_micro_usd is not None and self.charge is not None:
            fields["cost_micro_usd"] = self.cost_micro_usd
            fields["outcome"] = self.charge.outcome
        return fields

    def _decision(self) -> str | None:
        if self.reserved is not None:
            return "allowed"
        if self.route is None:
            return None
        return "unmetered" if self.endpoint is None else "pending"

    # Steps.

    def _route(self, headers: dict[str, str]) -> tuple[Route, str]:
        path = headers.get(":path", "")
        found = self.runtime.route(path, headers.get(":authority", ""))
        if found is None:
            prefixes = ", ".join(self.runtime.known_prefixes()) or "none"
            raise RouteUnknown(
                f"no provider is configured for {path.split('?')[0]!r}; "
                f"known route prefixes: {prefixes}"
            )
        return found

    async def _identify(
        self, headers: dict[str, str], message: pb.HttpHeaders
    ) -> tuple[str, str | None]:
        """The identity (and the tool a key was issued for): from a gateway
        key when the client presents one, else from the trusted header."""
        key = presented_key(headers)
        if key is None or self.runtime.keys is None:
            header = self.runtime.identity_header
            values = messages.header_values(message, header)
            return identity_from(values, header), None
        try:
            record = await self.runtime.keys.identify(key)
        except StoreUnavailable as exc:
            # Without the key's record the caller is unknown, whatever the
            # store-failure policy says about budgets.
            raise ServiceUnavailable(
                "the gateway cannot check keys right now; try again shortly",
                headers={"retry-after": "1"},
            ) from exc
        if record is None:
            raise IdentityInvalid("the gateway key is unknown, expired or revoked")
        return record.identity, record.tool

    def _endpoint(self, *, bodyless: bool) -> Endpoint | None:
        """The metered endpoint, or None for an allowed pass-through."""
        assert self.route is not None
        endpoint = self.route.family.endpoint_for(self.method, self.upstream_path)
        if endpoint is None:
            self._check_passthrough(bodyless=bodyless)
        elif bodyless:
            path = self.upstream_path.split("?")[0]
            raise BadRequest(f"{self.method} {path} needs a JSON body")
        else:
            self._check_plain_body()
        return endpoint

    def _check_plain_body(self) -> None:
        """A metered body must be read as sent: refuse any content coding
        (RFC 7694: 415, with the codings taken in ``accept-encoding``)."""
        coding = self._request_headers.get("content-encoding", "").strip().lower()
        if coding in ("", "identity"):
            return
        raise UnsupportedEncoding(
            f"the gateway reads every request it meters and takes no compressed "
            f"body (content-encoding: {coding[:40]}); send it uncompressed",
            headers={"accept-encoding": "identity"},
        )

    async def _signature(self, body: bytes) -> dict[str, str]:
        """Credential headers computed over the body as sent (SigV4)."""
        assert self.route is not None
        if not self.route.family.signs_body:
            return {}
        config = self.route.config
        host = config.upstream_host or self._request_headers.get(":authority", "")
        try:
            secret = await self.runtime.secret(self.route)
            if secret is None:
                return {}
            return self.route.family.signed_headers(
                secret.reveal(),
                method=self.method,
                url=f"https://{host}{self.upstream_path}",
                headers=self._request_headers,
                body=body,
                region=config.region,
            )
        except CredentialError as exc:
            log.error(
                "request signing failed",
                extra={"provider": self.route.name, "reason": str(exc)},
            )
            raise ServiceUnavailable(
                f"the gateway cannot sign requests for provider {self.route.name}"
            ) from exc

    def _check_passthrough(self, *, bodyless: bool) -> None:
        """Unmetered calls: a bodyless read (listing models, say), or what
        the operator allowed. A body could ask for paid work, and a DELETE
        could destroy the organisation's files, so neither passes unasked."""
        assert self.route is not None
        path = self.upstream_path.split("?")[0]
        allowed = self.route.config.passthrough_paths
        if any(path.startswith(p) for p in allowed):
            return
        if self.method in _READ_METHODS and bodyless:
            return
        raise EndpointNotAllowed(
            f"{self.method} {path} is not an endpoint this gateway can meter; "
            "an operator can allow it with passthrough_paths"
        )

    async def _credential_mutation(self, path: str) -> pb.HeaderMutation:
        assert self.route is not None
        policy = self.runtime.policy
        # The caller's identity, tool and labels, and anything else a client
        # sends in the gateway's own header namespace, are the gateway's
        # business, not the provider's; so is the method the call is judged by.
        internal = [
            self.runtime.identity_header,
            policy.tools.header,
            policy.attribution.header,
            *(n for n in self._request_headers if n.startswith(GATEWAY_HEADER_PREFIX)),
            *METHOD_OVERRIDE_HEADERS,
        ]
        # Each name once: the internal headers are mostly x-tollgate-* too.
        sent_credentials = client_credential_headers(self._request_headers)
        remove = list(dict.fromkeys([*sent_credentials, *internal]))
        clean_path = without_query_credentials(path)
        try:
            secret = await self.runtime.secret(self.route)
        except CredentialError as exc:
            log.error(
                "upstream credential unavailable",
                extra={"provider": self.route.name, "reason": str(exc)},
            )
            raise ServiceUnavailable(
                f"the gateway has no usable credential for provider {self.route.name}"
            ) from exc
        inject = self.route.family.credential_headers(secret.reveal()) if secret else {}
        if clean_path != path:
            inject = {**inject, ":path": clean_path}
        return messages.header_mutation(
            inject, remove=[h for h in remove if h not in inject]
        )

    async def _reserve_or_downgrade(self) -> None:
        """Reserve; where a budget names a cheaper model for this one, switch
        to it instead of refusing, or once that budget's spend has passed its
        downgrade threshold (read from the levels the reservation returns, so
        no extra Redis call unless a refusal is turned into a retry)."""
        try:
            await self._reserve()
        except BudgetExceeded as refusal:
            refusing = next(
                (b for b in self._buckets if b.scope == refusal.scope), None
            )
            if not self._switch_model(refusing, reason="refused"):
                raise
            await self._reserve()
            return

        for bucket, level in zip(self._buckets, self.levels):
            if bucket.past_downgrade_level(level) and self._switch_model(
                bucket, "soft_limit"
            ):
                return

    def _switch_model(self, bucket: BucketSpec | None, reason: str) -> bool:
        """Ask for ``bucket``'s cheaper model; False where it names none or
        the model cannot be changed in this provider's body."""
        assert self.route is not None and self.facts is not None
        cheaper = bucket.downgrade(self.facts.model) if bucket else None
        body = self.facts.body if self.facts.body is not None else self._original_body
        rewritten = self.route.family.with_model(body, cheaper) if cheaper else None
        if rewritten is None:
            return False
        log.info(
            "model downgraded",
            extra={
                "request_id": self.request_id,
                "scope": bucket.scope,
                "reason": reason,
                "requested_model": self.facts.model,
                "model": cheaper,
            },
        )
        self.facts = replace(self.facts, model=cheaper, body=rewritten)
        self.model = cheaper
        return True

    async def _reserve(self) -> None:
        assert self.route is not None and self.facts is not None
        assert self.caller is not None
        pricer = self.runtime.pricer
        self.output_cap_tokens = self.facts.max_output_tokens
        if self.output_cap_tokens is None:  # 0 is a cap: embeddings write none
            self.output_cap_tokens = pricer.max_output_tokens(
                self.route.name, self.facts.model
            )
        estimate = Usage(self.facts.input_estimate_tokens, self.output_cap_tokens)
        if self.endpoint is not None and self.endpoint.billable:
            self.estimate_micro_usd = self._price_usage(
                estimate, service_tier=self.facts.service_tier
            ).cost_micro_usd
        now = datetime.now(UTC)
        buckets = self._buckets = self.runtime.buckets_for(self.caller, now)

        try:
            self.levels = await self._store.reserve(
                self.request_id,
                buckets,
                estimate_micro_usd=self.estimate_micro_usd,
                estimate_tokens=estimate.total_tokens,
                record=self._record(),
                now_ms=int(now.timestamp() * 1000),
            )
        except StoreUnavailable as exc:
            self._telemetry.record_redis_error("reserve")
            self._admit_unreserved(exc)
        except asyncio.CancelledError:
            # Envoy ended the stream (its client left) while Redis answered:
            # the hold may stand, and the request never left the gateway, so
            # close() gives it back instead of a lease charging it later.
            self.reserved = buckets
            self.refuse()
            raise

        self.reserved = buckets
        for bucket, level in zip(buckets, self.levels):
            if bucket.unit == UNIT_MICRO_USD:
                self._telemetry.record_budget_level(bucket.scope, level)

    def _admit_unreserved(self, exc: StoreUnavailable) -> None:
        """Redis is unreachable: admit (journaling the settlement) if the
        policy says so and the journal has room, else refuse with 503."""
        admit = (
            self.runtime.policy.store_failure == "admit" and self._journal.has_room()
        )
        log.warning(
            "budget store unreachable; admitting unreserved"
            if admit
            else "budget store unreachable; refusing",
            extra={"request_id": self.request_id, "reason": str(exc)},
        )
        if not admit:
            if exc.maybe_applied:
                # Only the answer was lost: a hold Redis made is given back on
                # close, or its lease would charge the estimate for a 503.
                self.reserved = self._buckets
            raise ServiceUnavailable(
                "the gateway cannot check budgets right now; try again shortly",
                headers={"retry-after": "1"},
            ) from exc
        self.unreserved = True

    def _open_reader(self, headers: dict[str, str]) -> None:
        assert self.route is not None and self.endpoint is not None
        self._meter = ResponseMeter(
            self.route.family,
            self.endpoint,
            content_type=headers.get("content-type", ""),
            content_encoding=headers.get("content-encoding", "identity"),
            headers=headers,
        )

    def _finish_body(self) -> None:
        self.response_complete = True
        self.finished = True
        if self.charge is None:  # not priced at the body's last event
            self._price()

    def _price(self) -> None:
        """Decide the charge and its cost. Never raises: a fault here charges
        the reservation's estimate, never nothing."""
        try:
            self._price_reading()
        except Exception:  # metering never fails a call, nor makes it free
            log.exception(
                "pricing the call failed; charging its estimate",
                extra={"request_id": self.request_id},
            )
            self.charge = Charge(None, True, ESTIMATED_FAULT)
            self.cost_micro_usd, self.price_source = self.estimate_micro_usd, None

    def _price_reading(self) -> None:
        self._reading = self._read_final()
        facts = CallFacts(
            billable=bool(self.endpoint and self.endpoint.billable),
            request_input=self.facts.input if self.facts else InputEstimate(),
            output_cap_tokens=self.output_cap_tokens,
            status=self.status,
            reading=self._reading,
            response_complete=self.response_complete,
            streaming=bool(self.facts and self.facts.streaming),
            upstream_lost=self.upstream_lost,
        )
        self.charge = decide_charge(facts)
        if self.charge.usage is None:
            self.cost_micro_usd, self.price_source = 0, None
            return
        price = self._price_usage(
            self.charge.usage,
            self._billed_model(),
            service_tier=self._served_tier(),
        )
        self.cost_micro_usd, self.price_source = price.cost_micro_usd, price.source

    def _served_tier(self) -> str | None:
        """The tier the answer says served the call, else the one asked for
        (a call cut before its answer said)."""
        if self._reading is not None and self._reading.service_tier:
            return self._reading.service_tier
        return self.facts.service_tier if self.facts else None

    def _read_final(self) -> Reading | None:
        if self._meter is None:
            return None
        reading = self._meter.finish()
        if reading.model and self.model == "unknown":
            self.model = reading.model
        return reading

    def _billed_model(self) -> str | None:
        assert self.route is not None
        config = self.route.config
        return self.runtime.pricer.billed_model(
            config.family,
            self.route.name,
            None if self.model == "unknown" else self.model,
            self._reading.model if self._reading else None,
            pricing_provider=config.pricing_provider,
        )

    def _price_usage(
        self, usage: Usage, model: str | None = None, service_tier: str | None = None
    ) -> Price:
        assert self.route is not None
        if model is None:
            model = None if self.model == "unknown" else self.model
        return self.runtime.pricer.price(
            self.route.config.family,
            self.route.name,
            model,
            usage,
            pricing_provider=self.route.config.pricing_provider,
            service_tier=service_tier,
        )

    def _settlement(self) -> Settlement:
        assert self.charge is not None
        usage = self.charge.usage or Usage()
        return Settlement(
            request_id=self.request_id,
            cost_micro_usd=self.cost_micro_usd or 0,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            estimated=self.charge.estimated,
            outcome=self.charge.outcome,
            detail={
                "usage": usage.as_dict(),
                "estimate_micro_usd": self.estimate_micro_usd,
                "price_source": self.price_source,
                "status": self.status,
                "problem": self._reading.problem if self._reading else None,
                "response_model": self._reading.model if self._reading else None,
                "endpoint": self.endpoint.operation if self.endpoint else None,
            },
        )

    def attribution(self) -> Attribution:
        """Who and what this call's spend is booked to."""
        caller = self.caller
        return Attribution(
            identity=self.identity or "",
            provider=self.route.name if self.route else "",
            model=self.model,
            team=(caller.team or "") if caller else "",
            project=(caller.project or "") if caller else "",
            tool=(caller.tool or "") if caller else "",
            labels=self.labels,
        )

    def _record(self) -> dict[str, Any]:
        return {
            **self.attribution().as_dict(),
            "estimate_micro_usd": self.estimate_micro_usd,
        }

    def _log_fields(self) -> dict[str, Any]:
        charge = self.charge
        usage = charge.usage if charge and charge.usage else Usage()
        return {
            "request_id": self.request_id,
            "identity": self.identity,
            "provider": self.route.name if self.route else None,
            "model": self.model,
            "status": self.status,
            "outcome": charge.outcome if charge else None,
            "estimated": charge.estimated if charge else None,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cost_micro_usd": self.cost_micro_usd,
            "estimate_micro_usd": self.estimate_micro_usd,
            "duration_ms": int((time.monotonic() - self.started) * 1000),
        }


def _model_name(model: str | None) -> str:
    """The requested model, refused when it could not be a model's name."""
    if model is None:
        return "unknown"
    if len(model) > MAX_MODEL_LENGTH or not model.isprintable():
        raise BadRequest(
            "the model name must be printable text of at most "
            f"{MAX_MODEL_LENGTH} characters"
        )
    return model


def _lost_after_sending(details: str) -> bool:
    """True for Envoy's own answer for a provider that may have run the call."""
    if not details.startswith(_LOST_AFTER_SENDING):
        return False
    return not any(reason in details for reason in _NEVER_SENT)


def _status(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None
