"""The policy file's schema: providers, identity, budgets and prices.

Every model forbids unknown keys, so a misspelled key is an error rather than
a silently ignored setting. Money is written in the file as decimal USD
(``"12.50"`` or ``12.5``) and held as integer micro-USD from then on.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from extproc.money import usd_to_micro
from extproc.providers import FAMILIES

_HEADER_NAME = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]+$")
_TENANT = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)$")
_DURATION_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def duration_ms(text: str) -> int:
    """``"90s"``, ``"1h"``, ``"1d"`` to milliseconds."""
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a duration like 500ms, 30s, 5m, 1h or 1d")

    return int(match.group(1)) * _DURATION_MS[match.group(2)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Usd = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]
# Budgets are counted in micro-USD by Lua scripts whose numbers are doubles,
# exact below 2**53 (about 9 billion USD); a budget stays well below that.
MAX_BUDGET_USD = 1_000_000_000
BudgetUsd = Annotated[Decimal, Field(ge=0, le=MAX_BUDGET_USD, allow_inf_nan=False)]
MAX_PER_MINUTE = 10**12


class CredentialSource(_Strict):
    """Where an upstream credential is read from: exactly one of the two.

    ``format: google_service_account`` reads a service account key (JSON)
    and injects short-lived OAuth access tokens minted from it (Vertex AI).
    """

    env: str | None = None
    file: str | None = None
    format: Literal["raw", "google_service_account"] = "raw"

    @model_validator(mode="after")
    def _exactly_one(self) -> CredentialSource:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of 'env' or 'file'")
        return self


class Provider(_Strict):
    """One upstream provider the gateway fronts.

    ``route_prefix`` is the path prefix Envoy routes on (stripped before the
    request goes upstream); ``hosts`` are the :authority values that select
    this provider when no prefix matches (egress deployments).
    """

    family: str
    route_prefix: str | None = None
    hosts: tuple[str, ...] = ()
    credential: CredentialSource | None = None
    pricing_provider: str | None = None
    passthrough_paths: tuple[str, ...] = ()
    upstream_host: str | None = None  # the host Envoy sends to; signing covers it
    # Whether the gateway may add stream_options.include_usage to an OpenAI-
    # style stream; off for servers that refuse unknown fields (they must
    # then report usage on their own, as Mistral does).
    rewrite_stream_usage: bool = True
    region: str | None = None  # AWS region for SigV4, else read from the host

    @field_validator("family")
    @classmethod
    def _known_family(cls, value: str) -> str:
        if value not in FAMILIES:
            known = ", ".join(sorted(FAMILIES))
            raise ValueError(f"unknown provider family {value!r}; known: {known}")
        return value

    @field_validator("route_prefix")
    @classmethod
    def _prefix_shape(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("/") or value.endswith("/")):
            raise ValueError("route_prefix starts with '/' and has no trailing '/'")
        return value


class Identity(_Strict):
    """Where the caller's identity comes from."""

    header: str = "x-tollgate-identity"

    @field_validator("header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        value = value.lower()
        if not _HEADER_NAME.match(value):
            raise ValueError(f"{value!r} is not a valid HTTP header name")
        return value


class Budget(_Strict):
    """A budget in USD, of one of two kinds.

    - A token bucket: ``capacity_usd``, regaining ``refill_usd`` every
      ``refill_every``, pro rata.
    - A calendar budget: ``amount_usd`` per ``period`` (day, week, month,
      quarter), reset at the period's start in the policy's time zone.

    ``soft_limits_percent`` are spend levels (percent of the capacity or
    amount) reported once per period on the events stream.
    """

    capacity_usd: BudgetUsd | None = None
    refill_usd: BudgetUsd = Decimal(0)
    refill_every: str = "1d"
    amount_usd: BudgetUsd | None = None
    # The same amounts in the policy's currency (``currency.code``); turned
    # into USD at the policy's rate when the policy is read.
    capacity: BudgetUsd | None = None
    refill: BudgetUsd | None = None
    amount: BudgetUsd | None = None
    period: Literal["day", "week", "month", "quarter"] | None = None
    soft_limits_percent: tuple[Annotated[int, Field(gt=0, le=100)], ...] = ()
    # Past a soft limit, or where the budget would refuse, a call to one of
    # these models goes to the cheaper one named instead (model in the body).
    downgrade_models: dict[str, str] = {}
    downgrade_at_percent: int | None = Field(default=None, gt=0, le=100)

    @field_validator("refill_every")
    @classmethod
    def _duration(cls, value: str) -> str:
        duration_ms(value)
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Budget:
        pairs = (
            ("capacity", "capacity_usd"),
            ("refill", "refill_usd"),
            ("amount", "amount_usd"),
        )
        for local, usd in pairs:
            if getattr(self, local) is not None and usd in self.model_fields_set:
                raise ValueError(f"give {local} or {usd}, not both")
        bucket = self.capacity_usd is not None or self.capacity is not None
        calendar = self.amount_usd is not None or self.amount is not None
        if bucket == calendar:
            raise ValueError(
                "give either capacity_usd (a refilled bucket) or amount_usd with "
                "period (a calendar budget)"
            )
        if calendar and self.period is None:
            raise ValueError("a calendar budget (amount_usd) needs a period")
        if bucket and self.period is not None:
            raise ValueError("period belongs to calendar budgets (amount_usd)")
        return self

    @property
    def capacity_micro_usd(self) -> int:
        return usd_to_micro(
            self.capacity_usd
            if self.capacity_usd is not None
            else self.amount_usd or Decimal(0)
        )

    @property
    def refill_micro_usd(self) -> int:
        return usd_to_micro(self.refill_usd)

    @property
    def refill_period_ms(self) -> int:
        return duration_ms(self.refill_every)

    def in_usd(self, units_per_usd: Decimal) -> Budget:
        """This budget with amounts given in the policy's currency turned
        into USD (``units_per_usd`` units of that currency make one USD)."""
        update: dict[str, Decimal | None] = {
            "capacity": None,
            "refill": None,
            "amount": None,
        }
        for local, usd in (
            ("capacity", "capacity_usd"),
            ("refill", "refill_usd"),
            ("amount", "amount_usd"),
        ):
            value = getattr(self, local)
            if value is not None:
                update[usd] = value / units_per_usd
        return self.model_copy(update=update)


class Currency(_Strict):
    """The currency budgets, reports and errors speak; prices stay in USD."""

    code: str = "USD"
    per_usd: Decimal = Field(default=Decimal(1), gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _usd_is_one(self) -> Currency:
        if self.code.upper() == "USD" and self.per_usd != 1:
            raise ValueError("per_usd other than 1 needs a currency other than USD")
        return self


class RateLimits(_Strict):
    """Requests and tokens per minute; a limit left out does not apply."""

    requests_per_minute: int | None = Field(default=None, gt=0, le=MAX_PER_MINUTE)
    tokens_per_minute: int | None = Field(default=None, gt=0, le=MAX_PER_MINUTE)


class Limits(_Strict):
    """What applies to one scope: a budget and rate limits, both optional."""

    budget: Budget | None = None
    rate_limits: RateLimits | None = None


class Member(_Strict):
    """Where an identity belongs in the organisation."""

    team: str | None = None
    project: str | None = None


class ToolPattern(_Strict):
    """A User-Agent prefix that names a tool."""

    name: str
    user_agent_prefix: str


class ToolLimits(_Strict):
    """Limits for one tool: per user of the tool, and for the tool overall."""

    per_user: Limits | None = None
    overall: Limits | None = None


class Tools(_Strict):
    """How the calling tool is recognised and what it may spend."""

    header: str = "x-tollgate-tool"
    patterns: tuple[ToolPattern, ...] = ()
    limits: dict[str, ToolLimits] = {}


class AttributionHeader(_Strict):
    """A client header of ``key=value`` pairs that adds spend dimensions."""

    header: str = "x-tollgate-attribution"
    max_pairs: int = Field(default=8, gt=0, le=64)
    max_bytes: int = Field(default=512, gt=0, le=8192)


class ModelPrice(_Strict):
    """Operator rates for one model, USD per million tokens.

    Cache rates default to the input rate where not given (the safe side:
    never cheaper than the provider's published cache discount would be).
    """

    model: str
    provider: str | None = None
    input_usd_per_mtok: Usd
    output_usd_per_mtok: Usd
    cache_read_usd_per_mtok: Usd | None = None
    cache_write_usd_per_mtok: Usd | None = None
    cache_write_1h_usd_per_mtok: Usd | None = None
    max_output_tokens: int | None = Field(default=None, gt=0)


class FallbackPrice(_Strict):
    """Rates for a model no price source knows; such calls are flagged."""

    input_usd_per_mtok: Usd = Decimal(15)
    output_usd_per_mtok: Usd = Decimal(75)


class Pricing(_Strict):
    default_max_output_tokens: int = Field(default=4096, gt=0)
    fallback: FallbackPrice = FallbackPrice()
    models: tuple[ModelPrice, ...] = ()


class Policy(_Strict):
    """The whole policy file."""

    version: Literal[1] = 1
    tenant: str = "default"
    timezone: str = "UTC"
    currency: Currency = Currency()
    identity: Identity = Identity()
    providers: dict[str, Provider]
    directory: dict[str, Member] = {}
    organisation: Limits = Limits()
    teams: dict[str, Limits] = {}
    projects: dict[str, Limits] = {}
    users: dict[str, Limits] = {}
    tools: Tools = Tools()
    attribution: AttributionHeader = AttributionHeader()
    pricing: Pricing = Pricing()
    # When Redis is unreachable: refuse calls with 503 (the default: no spend
    # goes unchecked), or admit them and journal their settlements locally.
    store_failure: Literal["refuse", "admit"] = "refuse"

    @field_validator("tenant")
    @classmethod
    def _tenant_shape(cls, value: str) -> str:
        if not _TENANT.match(value):
            raise ValueError("tenant is 1-64 of letters, digits, '_', '.', '-'")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _prefixes_unique(self) -> Policy:
        seen: dict[str, str] = {}
        for name, provider in self.providers.items():
            prefix = provider.route_prefix
            if prefix is not None and prefix in seen:
                raise ValueError(
                    f"providers {seen[prefix]!r} and {name!r} share route_prefix "
                    f"{prefix!r}"
                )
            if prefix is not None:
                seen[prefix] = name
        return self

    @model_validator(mode="after")
    def _budgets_in_usd(self) -> Policy:
        """Every budget held in USD from here on, whatever it was written in."""
        rate = self.currency.per_usd

        def convert(limits: Limits | None) -> Limits | None:
            if limits is None or limits.budget is None:
                return limits
            return limits.model_copy(update={"budget": limits.budget.in_usd(rate)})

        def convert_all(table: dict[str, Limits]) -> dict[str, Limits]:
            return {name: convert(limits) for name, limits in table.items()}

        tools = {
            name: tool.model_copy(
                update={
                    "per_user": convert(tool.per_user),
                    "overall": convert(tool.overall),
                }
            )
            for name, tool in self.tools.limits.items()
        }
        # The model is frozen for its readers; this validator still builds it
        # and replaces whole fields once, before anyone holds the policy.
        for name, value in (
            ("users", convert_all(self.users)),
            ("teams", convert_all(self.teams)),
            ("projects", convert_all(self.projects)),
            ("organisation", convert(self.organisation)),
            ("tools", self.tools.model_copy(update={"limits": tools})),
        ):
            object.__setattr__(self, name, value)
        return self

    @model_validator(mode="after")
    def _directory_names_known(self) -> Policy:
        for identity, member in self.directory.items():
            if member.team is not None and member.team not in self.teams:
                raise ValueError(
                    f"directory.{identity}.team names unknown team {member.team!r}"
                )
            if member.project is not None and member.project not in self.projects:
                raise ValueError(
                    f"directory.{identity}.project names unknown project "
                    f"{member.project!r}"
                )
        return self
