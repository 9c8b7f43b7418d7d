"""One policy compiled into what the request path looks up."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from extproc.budgets.admin import OverrideBook, apply_overrides
from extproc.budgets.scopes import Caller, buckets_for, caller_for
from extproc.budgets.store import BucketSpec, BudgetStore
from extproc.credentials import CredentialReader, Secret
from extproc.errors import RouteConflict
from extproc.keys import KeyRing
from extproc.policy.model import Policy, Provider
from extproc.pricing import Pricer
from extproc.providers import ProviderFamily, family


@dataclass(frozen=True, slots=True)
class Route:
    """A provider as the request path sees it."""

    name: str
    config: Provider
    family: ProviderFamily
    prefix: str | None


class Runtime:
    """Lookups for one policy: routes, budgets, credentials, prices.

    Immutable once built; a reload builds a new one.
    """

    def __init__(
        self,
        policy: Policy,
        credentials: CredentialReader,
        store: BudgetStore,
        *,
        keys: KeyRing | None = None,
        overrides: OverrideBook | None = None,
    ) -> None:
        self.policy = policy
        self.store = store
        self.keys = keys
        self.overrides = overrides or OverrideBook()
        self.pricer = Pricer(policy.pricing)
        self._credentials = credentials
        routes = [
            Route(name, config, family(config.family), config.route_prefix)
            for name, config in policy.providers.items()
        ]
        self._by_prefix = sorted(
            (r for r in routes if r.prefix),
            key=lambda r: len(r.prefix or ""),
            reverse=True,
        )
        self._by_host = {host.lower(): r for r in routes for host in r.config.hosts}

    @property
    def identity_header(self) -> str:
        return self.policy.identity.header

    @property
    def tenant(self) -> str:
        return self.policy.tenant

    def route(self, path: str, authority: str) -> tuple[Route, str] | None:
        """The provider for a request and the path it will have upstream:
        by path prefix first, then by host; None when neither names one.

        Raises ``RouteConflict`` when the prefix names one provider and the
        host another: an Envoy that routed by host would send the prefix's
        credential to the host's provider.
        """
        by_host = self._by_host.get(_host_of(authority))
        for route in self._by_prefix:
            prefix = route.prefix or ""
            if (
                path == prefix
                or path.startswith(prefix + "/")
                or path.startswith(prefix + "?")
            ):
                if by_host is not None and by_host is not route:
                    raise RouteConflict(
                        f"the path names provider {route.name!r} but the Host "
                        f"header names provider {by_host.name!r}; send the "
                        "gateway's own host with a route prefix, or the "
                        "provider's host without one"
                    )
                return route, path[len(prefix) :] or "/"
        return (by_host, path) if by_host else None

    def known_prefixes(self) -> list[str]:
        return [r.prefix for r in self._by_prefix if r.prefix]

    async def secret(self, route: Route) -> Secret | None:
        """The upstream credential of ``route``; None when it has none."""
        if route.config.credential is None:
            return None
        return await self._credentials.current(route.config.credential)

    def caller(self, identity: str, tool: str | None) -> Caller:
        return caller_for(self.policy, identity, tool)

    def buckets_for(self, caller: Caller, now: datetime) -> list[BucketSpec]:
        """Every budget and rate limit that applies to ``caller``, with the
        budget overrides set through the admin API applied."""
        buckets = buckets_for(self.policy, caller, now)
        overrides = self.overrides.current
        if not overrides:
            return buckets
        return apply_overrides(buckets, caller, overrides, self.policy.timezone, now)


def _host_of(authority: str) -> str:
    """The host of an :authority value, lower case, without its port."""
    if authority.startswith("["):  # an IPv6 literal: [::1]:8080
        return authority.partition("]")[0][1:].lower()
    return authority.rsplit(":", 1)[0].lower()
