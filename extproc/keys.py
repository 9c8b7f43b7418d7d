"""Gateway-issued virtual keys: a ``tgk_`` key stands for one identity.

An operator issues a key for an identity (optionally bound to a tool, with an
optional expiry) and hands it to a person or a program, which sends it as it
would send a provider's key (``authorization: Bearer``, ``x-api-key``,
``api-key`` or ``x-goog-api-key``). The gateway resolves it to the identity
and, like every client credential, never forwards it upstream.

The key is shown once, when it is issued. Redis keeps only its SHA-256
digest: one field of the tenant's hash ``tg:{tenant}:keys`` per key, the
digest as field name and the JSON ``KeyRecord`` as value. A key's public id
is the first ``KEY_ID_CHARS`` hex characters of its digest; it names the key
in listings and revocations and is no help in guessing the key.

The request path asks ``KeyRing.identify``, which caches answers, found or
not, for ``cache_ttl_s``: a key's revocation therefore takes effect on every
gateway replica within ``cache_ttl_s`` (5 s by default). Expiry is checked
on every call and takes effect at once.

The admin functions (``issue_key``, ``list_keys``, ``find_key``,
``revoke_key``) take a blocking client; they raise ``ValueError`` for
invalid arguments and ``StoreUnavailable`` when Redis does not answer.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from extproc.budgets.clients import AsyncClient, SyncClient, store_errors
from extproc.budgets.store import Keys
from extproc.errors import Refusal
from extproc.identity import identity_from

log = logging.getLogger(__name__)

KEY_PREFIX = "tgk_"
KEY_RANDOM_BYTES = 30  # 40 URL-safe base64 characters, 240 bits
KEY_ID_CHARS = 12  # 48 bits; issue_key draws again on the rare clash
DEFAULT_CACHE_TTL_S = 5.0
MAX_CACHED_KEYS = 10_000

# Where a client may send a key: the headers providers' SDKs use for theirs.
KEY_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")

_KEY_SHAPE = re.compile(r"tgk_[A-Za-z0-9_-]{40}")
_KEY_ID_SHAPE = re.compile(rf"[0-9a-f]{{{KEY_ID_CHARS}}}")
_TOOL_NAME = re.compile(r"[a-z0-9._-]{1,64}")


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What the gateway knows of one key; never the key itself.

    ``tool`` is the tool the key was issued for (None: any tool).
    ``expires_ms`` and ``revoked_ms`` are ms since the epoch, or None.
    """

    key_id: str
    identity: str
    tool: str | None
    created_ms: int
    expires_ms: int | None = None
    revoked_ms: int | None = None

    def status(self, now_ms: int) -> str:
        """``active``, ``revoked`` or ``expired`` at ``now_ms``."""
        if self.revoked_ms is not None:
            return "revoked"
        if self.expires_ms is not None and now_ms >= self.expires_ms:
            return "expired"
        return "active"

    def active(self, now_ms: int) -> bool:
        return self.status(now_ms) == "active"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> KeyRecord:
        """Parse a stored record; ``ValueError`` when it is not one."""
        values = json.loads(text)
        if not isinstance(values, dict):
            raise ValueError("a key record is a JSON object")
        try:
            return cls(
                key_id=str(values["key_id"]),
                identity=str(values["identity"]),
                tool=_optional_str(values.get("tool")),
                created_ms=int(values["created_ms"]),
                expires_ms=_optional_int(values.get("expires_ms")),
                revoked_ms=_optional_int(values.get("revoked_ms")),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"incomplete key record: {exc}") from exc


def keys_hash(tenant: str) -> str:
    """The Redis hash of the tenant's keys: ``tg:{tenant}:keys``."""
    return f"{Keys(tenant).prefix}keys"


def holds_key(value: str) -> bool:
    """True for text with anything shaped like a gateway key in it."""
    return bool(_KEY_SHAPE.search(value))


def looks_like_key(value: str) -> bool:
    """True for text shaped like a gateway key (``tgk_`` + 40 characters)."""
    return bool(_KEY_SHAPE.fullmatch(value))


def key_digest(key: str) -> str:
    """The hex SHA-256 digest under which a key's record is stored."""
    return hashlib.sha256(key.encode()).hexdigest()


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The gateway key a request carries, or None.

    ``headers`` has lower-case names. Looks at ``authorization: Bearer``,
    then ``x-api-key``, ``api-key``, ``x-goog-api-key``. A value that starts
    with ``tgk_`` is meant as a gateway key, well formed or not (a malformed
    one is then refused as unknown rather than passed over for another
    identity); any other value is a provider's own key and not one.
    """
    for name in KEY_HEADERS:
        value = headers.get(name, "").strip()
        if name == "authorization":
            scheme, _, value = value.partition(" ")
            if scheme.lower() != "bearer":
                continue
            value = value.strip()
        if value.startswith(KEY_PREFIX):
            return value
    return None


@dataclass(frozen=True, slots=True)
class _Cached:
    digest: str
    record: KeyRecord | None
    fresh_until_s: float


class KeyRing:
    """Resolves presented keys to their records for one tenant.

    Answers are cached per key id for ``cache_ttl_s``, found or not, so the
    request path touches Redis about once per key and interval; at most
    ``max_cached`` answers are kept, the oldest dropped first. ``clock``
    returns seconds since the epoch (tests pass a controllable one).
    """

    def __init__(
        self,
        client: AsyncClient,
        tenant: str,
        *,
        cache_ttl_s: float = DEFAULT_CACHE_TTL_S,
        max_cached: int = MAX_CACHED_KEYS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = client
        self.tenant = tenant
        self._hash = keys_hash(tenant)
        self._ttl_s = cache_ttl_s
        self._max_cached = max_cached
        self._clock = clock
        self._cache: dict[str, _Cached] = {}

    async def identify(self, presented: str) -> KeyRecord | None:
        """The record of an active key, or None (unknown, expired, revoked).

        One HGET on a cache miss; raises ``StoreUnavailable`` when Redis does
        not answer (the caller decides between refusing and failing open).
        """
        if not looks_like_key(presented):
            return None
        digest = key_digest(presented)
        now_s = self._clock()

        entry = self._fresh(digest, now_s)
        if entry is None:
            record = await self._fetch(digest)
            self._remember(digest, record, now_s)
        else:
            record = entry.record

        if record is None or not record.active(int(now_s * 1000)):
            return None
        return record

    def forget(self) -> None:
        """Drop every cached answer (after a revocation in this process)."""
        self._cache.clear()

    def _fresh(self, digest: str, now_s: float) -> _Cached | None:
        entry = self._cache.get(digest[:KEY_ID_CHARS])
        if entry is None or entry.fresh_until_s <= now_s:
            return None
        # The cache is indexed by the public key id; the full digest decides,
        # compared in constant time so that timing says nothing about it.
        if not hmac.compare_digest(entry.digest, digest):
            return None
        return entry

    async def _fetch(self, digest: str) -> KeyRecord | None:
        with store_errors("looking up a gateway key"):
            raw = await self._redis.hget(self._hash, digest)
        if raw is None:
            return None
        try:
            return KeyRecord.from_json(raw)
        except ValueError:
            log.warning(
                "unreadable key record ignored",
                extra={"tenant": self.tenant, "key_id": digest[:KEY_ID_CHARS]},
            )
            return None

    def _remember(self, digest: str, record: KeyRecord | None, now_s: float) -> None:
        key_id = digest[:KEY_ID_CHARS]
        self._cache.pop(key_id, None)
        self._cache[key_id] = _Cached(digest, record, now_s + self._ttl_s)
        while len(self._cache) > self._max_cached:
            del self._cache[next(iter(self._cache))]


def new_key() -> str:
    """A fresh gateway key: ``tgk_`` and 40 URL-safe random characters."""
    return KEY_PREFIX + secrets.token_urlsafe(KEY_RANDOM_BYTES)


def issue_key(
    client: SyncClient,
    tenant: str,
    identity: str,
    tool: str | None = None,
    expires_in_ms: int | None = None,
    now_ms: int | None = None,
) -> tuple[str, KeyRecord]:
    """Issue a key for ``identity``; returns the key (show it once) and its
    record. Only the key's digest is stored.
    """
    identity, tool = _checked_identity(identity), _checked_tool(tool)
    if expires_in_ms is not None and expires_in_ms <= 0:
        raise ValueError("a key's lifetime must be positive")
    now_ms = _now_ms() if now_ms is None else now_ms
    name = keys_hash(tenant)

    with store_errors("issuing a gateway key"):
        taken = {_text(field)[:KEY_ID_CHARS] for field in client.hkeys(name)}
        while True:
            key = new_key()
            digest = key_digest(key)
            record = KeyRecord(
                key_id=digest[:KEY_ID_CHARS],
                identity=identity,
                tool=tool,
                created_ms=now_ms,
                expires_ms=None if expires_in_ms is None else now_ms + expires_in_ms,
            )
            if record.key_id in taken:
                continue
            if client.hsetnx(name, digest, record.to_json()):
                break

    log.info(
        "gateway key issued",
        extra={"tenant": tenant, "key_id": record.key_id, "identity": identity},
    )
    return key, record


def list_keys(client: SyncClient, tenant: str) -> list[KeyRecord]:
    """Every key record of the tenant, oldest first; never a key."""
    with store_errors("listing gateway keys"):
        raw = client.hgetall(keys_hash(tenant))
    records = [_parsed(tenant, field, value) for field, value in raw.items()]

    return sorted(
        (r for r in records if r is not None), key=lambda r: (r.created_ms, r.key_id)
    )


def find_key(client: SyncClient, tenant: str, key_id: str) -> KeyRecord | None:
    """The record of the key with public id ``key_id``, or None."""
    found = _find(client, tenant, key_id)
    return found[1] if found else None


def revoke_key(
    client: SyncClient, tenant: str, key_id: str, now_ms: int | None = None
) -> bool:
    """Revoke the key with public id ``key_id``.

    True when that key exists and is revoked (a second revocation keeps the
    first time); False when no key has that id. Gateways stop accepting the
    key within their cache interval.
    """
    found = _find(client, tenant, key_id)
    if found is None:
        return False
    digest, record = found
    if record.revoked_ms is not None:
        return True

    revoked = KeyRecord(
        **{**asdict(record), "revoked_ms": _now_ms() if now_ms is None else now_ms}
    )
    with store_errors("revoking a gateway key"):
        client.hset(keys_hash(tenant), digest, revoked.to_json())

    log.info("gateway key revoked", extra={"tenant": tenant, "key_id": key_id})
    return True


def _find(client: SyncClient, tenant: str, key_id: str) -> tuple[str, KeyRecord] | None:
    if not _KEY_ID_SHAPE.fullmatch(key_id):
        raise ValueError(f"a key id is {KEY_ID_CHARS} lower-case hex characters")
    name = keys_hash(tenant)
    with store_errors("looking up a gateway key"):
        digests = [_text(f) for f in client.hkeys(name) if _text(f).startswith(key_id)]
        raw = client.hget(name, digests[0]) if digests else None
    record = _parsed(tenant, digests[0], raw) if raw is not None else None

    return (digests[0], record) if record is not None else None


def _parsed(tenant: str, field: bytes | str, value: bytes | str) -> KeyRecord | None:
    try:
        return KeyRecord.from_json(value)
    except ValueError:
        log.warning(
            "unreadable key record ignored",
            extra={"tenant": tenant, "key_id": _text(field)[:KEY_ID_CHARS]},
        )
        return None


def _checked_identity(identity: str) -> str:
    """The identity as the trusted header would have to carry it."""
    try:
        return identity_from([identity.encode()], "identity")
    except Refusal as exc:
        raise ValueError(exc.message) from None


def _checked_tool(tool: str | None) -> str | None:
    if tool is None:
        return None
    tool = tool.strip().lower()
    if not _TOOL_NAME.fullmatch(tool):
        raise ValueError("a tool name is 1 to 64 of letters, digits, '.', '_', '-'")
    return tool


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _now_ms() -> int:
    return int(time.time() * 1000)
