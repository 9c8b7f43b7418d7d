"""The one exception tree of Tollgate.

Every error that Tollgate raises on purpose derives from ``TollgateError``.
Lower-layer errors (Redis, gRPC, YAML, provider bodies) are translated where
they enter, with the cause chained.

    TollgateError
    ├── ConfigError             settings or policy unusable (start-up, reload)
    │   └── PolicyError         the policy file is invalid; names key and line
    ├── CredentialError         an upstream credential cannot be read
    ├── StoreUnavailable        Redis did not answer
    ├── MeteringError           a response body could not be measured
    ├── PricingError            a usage could not be priced
    └── Refusal                 the request is answered by the gateway itself
        ├── IdentityMissing     401: no identity in the trusted source
        │   └── IdentityInvalid 401: an identity that cannot be used
        ├── RouteUnknown        404: no provider matches the request
        ├── EndpointNotAllowed  403: an endpoint the gateway cannot meter
        ├── BadRequest          400: the body is not what the endpoint takes
        │   ├── RouteConflict   400: Host and path name different providers
        │   └── UnsupportedEncoding 415: a compressed body to be metered
        ├── BudgetExceeded      429: a scope's budget cannot hold the estimate
        │   └── RateLimited     429: a requests- or tokens-per-minute limit
        ├── ServiceUnavailable  503: the gateway cannot decide right now
        └── GatewayFailure      500: an unexpected fault, answered generically

Only ``Refusal`` subclasses reach a client in words, and only through the
stream handler (``extproc.server.stream``), which is the one place that turns
errors into Envoy immediate responses. Anything else is logged and answered
with a generic message.
"""

from __future__ import annotations


class TollgateError(Exception):
    """Root of every error Tollgate raises on purpose."""


class ConfigError(TollgateError):
    """Settings or policy cannot be used."""


class PolicyError(ConfigError):
    """The policy file failed validation.

    ``problems`` holds one human-readable line per fault, each naming the key
    path and, where known, the line in the file.
    """

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__(f"invalid policy {source}: " + "; ".join(self.problems))


class CredentialError(TollgateError):
    """An upstream credential could not be read from its source."""


class StoreUnavailable(TollgateError):
    """The budget store (Redis) could not be reached or answered an error.

    ``maybe_applied`` is True when the command was sent and only its reply
    timed out: Redis may have run it all the same (a hold may stand).
    """

    def __init__(self, message: str, *, maybe_applied: bool = False) -> None:
        super().__init__(message)
        self.maybe_applied = maybe_applied


class MeteringError(TollgateError):
    """A response could not be measured (bad encoding, garbage, too large)."""


class PricingError(TollgateError):
    """A usage could not be turned into a cost."""


class Refusal(TollgateError):
    """A request that the gateway answers itself instead of forwarding.

    ``status`` is the HTTP status, ``code`` a short machine-readable reason,
    ``message`` the sentence the client reads, ``headers`` extra response
    headers (for example ``retry-after``).
    """

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})


class IdentityMissing(Refusal):
    status = 401
    code = "identity_missing"


class IdentityInvalid(IdentityMissing):
    code = "identity_invalid"


class RouteUnknown(Refusal):
    status = 404
    code = "route_unknown"


class EndpointNotAllowed(Refusal):
    status = 403
    code = "endpoint_not_metered"


class BadRequest(Refusal):
    status = 400
    code = "bad_request"


class RouteConflict(BadRequest):
    code = "route_conflict"


class UnsupportedEncoding(BadRequest):
    status = 415
    code = "unsupported_encoding"


class BudgetExceeded(Refusal):
    """A budget scope cannot hold the reservation.

    ``scope`` names the scope that refused, ``retry_after_s`` when it frees
    up (None when waiting cannot help: the request is larger than the budget).
    """

    status = 429
    code = "budget_exceeded"

    def __init__(self, message: str, *, scope: str, retry_after_s: int | None) -> None:
        headers = {} if retry_after_s is None else {"retry-after": str(retry_after_s)}
        super().__init__(message, headers=headers)
        self.scope = scope
        self.retry_after_s = retry_after_s


class RateLimited(BudgetExceeded):
    code = "rate_limited"


class ServiceUnavailable(Refusal):
    status = 503
    code = "service_unavailable"


class GatewayFailure(Refusal):
    """An unexpected fault; the client reads only a generic sentence."""

    status = 500
    code = "internal_error"
