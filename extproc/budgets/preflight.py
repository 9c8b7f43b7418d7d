"""What the gateway checks of its Redis at start, before it takes calls.

``check_store`` raises ``ConfigError`` for what will not pass by itself:
credentials Redis refuses, or a user whose ACL forbids the commands or keys
budgets need (every call would get a 503). It logs a warning for what
weakens budgets without stopping them: an eviction policy under which Redis
may drop budget keys when memory runs short (an evicted bucket starts full
again: spend unlimited), or one the gateway cannot read (managed services
may refuse ``INFO`` or ``CONFIG``). A Redis that does not answer at start is
a warning too: calls get 503s (or pass under ``store_failure: admit``) until
it does.
"""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

from extproc.budgets.clients import STORE_ERRORS, AsyncClient, redacted_url
from extproc.budgets.store import Keys
from extproc.errors import ConfigError

log = logging.getLogger(__name__)

SAFE_EVICTION_POLICY = "noeviction"

# KEYS[1]   a key of the tenant (its hash tag names the slot)
# Returns   1 when the key exists, else 0. Writes nothing: run to prove the
#           user may load and run scripts on the tenant's keys.
PROBE = "return redis.call('EXISTS', KEYS[1])"


async def check_store(client: AsyncClient, tenant: str, url: str) -> None:
    """Check that ``client`` can keep the budgets of ``tenant``.

    Raises ``ConfigError`` (naming ``url`` without its password) when Redis
    refuses the credentials or the user may not run the budget scripts on
    the tenant's keys. Logs a warning when Redis does not answer, may evict
    keys, or does not say whether it would.
    """
    shown = redacted_url(url)
    probe_key = Keys(tenant).bucket("preflight")

    try:
        await client.register_script(PROBE)(keys=[probe_key])
    except AuthenticationError as exc:
        raise ConfigError(f"redis at {shown} refused the credentials: {exc}") from exc
    except NoPermissionError as exc:
        raise ConfigError(
            f"the redis user of {shown} may not run the budget scripts on "
            f"{probe_key} (it needs EVALSHA, SCRIPT LOAD and the keys tg:*): {exc}"
        ) from exc
    except STORE_ERRORS as exc:
        log.warning(
            "redis not answering at start; calls wait for it",
            extra={"redis": shown, "reason": type(exc).__name__},
        )
        return

    await _check_eviction(client, shown)


async def _check_eviction(client: AsyncClient, shown: str) -> None:
    """Warn unless Redis says it never evicts keys."""
    try:
        reply = await client.info("memory")
    except STORE_ERRORS as exc:
        reason = str(exc) if isinstance(exc, ResponseError) else type(exc).__name__
        log.warning(
            "cannot read redis's eviction policy; make sure maxmemory-policy "
            "is noeviction, or budgets may be evicted and start full again",
            extra={"redis": shown, "reason": reason[:200]},
        )
        return

    policies = _eviction_policies(reply)
    unsafe = sorted(p for p in policies if p != SAFE_EVICTION_POLICY)
    if unsafe or not policies:
        log.warning(
            "redis may evict budget keys when memory runs short (an evicted "
            "budget starts full again); set maxmemory-policy to noeviction",
            extra={"redis": shown, "maxmemory_policy": ",".join(unsafe) or "unknown"},
        )


def _eviction_policies(reply: Any) -> set[str]:
    """The ``maxmemory_policy`` of each node in an ``INFO memory`` reply: a
    single server's dict, or a cluster client's dict of them by node."""
    if not isinstance(reply, dict):
        return set()
    if "maxmemory_policy" in reply:
        return {str(reply["maxmemory_policy"])}
    return {
        str(node["maxmemory_policy"])
        for node in reply.values()
        if isinstance(node, dict) and "maxmemory_policy" in node
    }
