"""What the flow hands to telemetry when one call is over."""

from __future__ import annotations

from dataclasses import dataclass

from extproc.metering.usage import Usage


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One AI call as the gateway decided, forwarded and charged it.

    Dimensions that do not apply (no team, no tool) are ``""``. ``provider``
    is the policy's provider name, ``provider_family`` its wire format
    (``openai``, ``anthropic``, ``gemini``, ``vertex``, ``bedrock``,
    ``azure-openai``). ``decision`` is ``"allowed"`` or the refusal code
    (``budget_exceeded``, ``identity_missing``, ...), and ``scope`` names
    the budget scope that refused. ``outcome`` is how the cost was obtained
    (``metered``, ``estimated_no_usage``, ``estimated_zero_usage``,
    ``estimated_cut``,
    ``estimated_no_response``, ``upstream_error``, ``free``,
    ``lease_expired``); ``estimated`` is True when the cost is an estimate.
    ``status`` is the upstream HTTP status, or the refusal's.
    """

    request_id: str
    identity: str
    team: str
    project: str
    tool: str
    provider: str
    provider_family: str
    operation: str
    request_model: str | None
    response_model: str | None
    usage: Usage | None
    cost_micro_usd: int
    outcome: str
    estimated: bool
    decision: str
    scope: str | None
    status: int | None
    finish_reasons: tuple[str, ...]
    price_source: str | None
