"""``tollgate usage``: meter and price one saved response body.

It runs the gateway's own code (``ResponseMeter``, ``decide_charge``,
``Pricer``), so what it prints is what the gateway would have charged.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from extproc.errors import BadRequest, ConfigError
from extproc.metering.charge import CallFacts, decide_charge
from extproc.metering.meter import ResponseMeter
from extproc.policy import load_policy
from extproc.policy.model import Pricing
from extproc.pricing import Pricer
from extproc.providers import InputEstimate, family
from extproc.settings import Settings

_TYPE_BY_SUFFIX = {
    ".sse": "text/event-stream",
    ".bin": "application/vnd.amazon.eventstream",
    ".json": "application/json",
}


def report(
    file: str,
    *,
    provider: str,
    path: str,
    model: str | None = None,
    pricing_provider: str | None = None,
    content_type: str | None = None,
    content_encoding: str = "identity",
    status: int = 200,
) -> dict[str, Any]:
    """Meter ``file`` (``-`` for stdin) as a response of ``provider`` at ``path``."""
    provider_family = family(provider)
    endpoint = provider_family.endpoint_for("POST", path)
    if endpoint is None:
        raise BadRequest(f"{path} is not an endpoint of provider family {provider}")
    body = sys.stdin.buffer.read() if file == "-" else _read(file)
    if not body:
        # The gateway charges an empty answer an estimate from its request,
        # which a saved response alone does not carry.
        raise BadRequest(f"{file} is empty: there is no response body to meter")
    content_type = content_type or _TYPE_BY_SUFFIX.get(
        Path(file).suffix, "application/json"
    )

    meter = ResponseMeter(
        provider_family,
        endpoint,
        content_type=content_type,
        content_encoding=content_encoding,
    )
    meter.feed(body)
    reading = meter.finish()
    pricing = _pricing()
    path_facts = _path_facts(provider_family, endpoint, path)
    cap = path_facts.max_output_tokens if path_facts else None
    charge = decide_charge(
        CallFacts(
            billable=endpoint.billable,
            request_input=InputEstimate(),
            output_cap_tokens=pricing.default_max_output_tokens if cap is None else cap,
            status=status,
            reading=reading,
            response_complete=True,
        )
    )

    pricer = Pricer(pricing)
    requested = model or (path_facts.model if path_facts else None)
    priced_model = pricer.billed_model(
        provider,
        provider,
        requested,
        reading.model,
        pricing_provider=pricing_provider,
    )
    price = None
    if charge.usage is not None:
        price = pricer.price(
            provider,
            provider,
            priced_model or reading.model,
            charge.usage,
            pricing_provider=pricing_provider,
            service_tier=reading.service_tier,
        )
    return {
        "provider": provider,
        "path": path,
        "model": priced_model or reading.model,
        "usage": charge.usage.as_dict() if charge.usage else None,
        "metered": charge.outcome == "metered",
        "estimated": charge.estimated,
        "outcome": charge.outcome,
        "problem": reading.problem,
        "price_source": price.source if price else None,
        "cost_micro_usd": price.cost_micro_usd if price else 0,
    }


def _path_facts(provider_family: Any, endpoint: Any, path: str) -> Any:
    """What the path alone says: the model it names (Gemini, Bedrock, Azure
    deployments) and whether the endpoint writes output at all."""
    try:
        return provider_family.read_request(endpoint, path, b"{}")
    except BadRequest:
        return None


def _read(file: str) -> bytes:
    try:
        return Path(file).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror}") from exc


def _pricing() -> Pricing:
    """The policy's pricing when a policy file is present, else the defaults."""
    settings = Settings()
    if settings.policy_file.exists():
        return load_policy(settings.policy_file).pricing
    return Pricing()


def print_report(**kwargs: Any) -> None:
    print(json.dumps(report(**kwargs), indent=2))
