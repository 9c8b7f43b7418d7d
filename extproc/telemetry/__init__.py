"""OpenTelemetry spans and metrics of every AI call through the gateway.

One span per call, a child of the trace context Envoy forwards, named and
attributed by the OpenTelemetry GenAI semantic conventions plus Tollgate's
own ``tollgate.*`` attributes (cost, identity, team, project, tool, the
budget decision and the scope that refused, metered or estimated). Metrics:
token usage by token type, spend in USD, requests by decision, budget left
per scope, time per ext_proc phase, Redis errors, journal depth.

The flow uses it like this::

    telemetry = Telemetry.from_environment()
    trace = telemetry.start_call(traceparent=headers.get("traceparent"))
    with trace.phase("request_headers"):
        ...
    trace.finish(CallRecord(...))

Nothing here raises into the flow: a failure is logged at WARNING and the
call goes on. Attribute and metric names are constants in ``names``.
"""

from extproc.telemetry import _names as names
from extproc.telemetry._record import CallRecord
from extproc.telemetry._telemetry import CallTrace, Telemetry

__all__ = ["CallRecord", "CallTrace", "Telemetry", "names"]
