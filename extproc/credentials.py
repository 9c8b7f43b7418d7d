"""Upstream credentials: read from their source, never logged, never echoed.

The gateway is the only holder of provider credentials. Every header by which
a client could pass a credential is removed from the request, and the
provider's own credential is injected in its place.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

import google.auth.transport.urllib3  # noqa: F401  (registers the transport)
import urllib3

from extproc.errors import CredentialError
from extproc.keys import holds_key
from extproc.policy.model import CredentialSource

log = logging.getLogger(__name__)

# Headers that carry a credential in some provider's API, or that would let a
# client choose what the gateway's credential is billed to (an OpenAI
# organisation or project, a Google quota project). All are removed from
# every request before it goes upstream, whatever the provider; so is every
# ``x-amz-*`` header (SigV4 parts) and every header holding a gateway key,
# see ``client_credential_headers``.
CLIENT_CREDENTIAL_HEADERS = (
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "ocp-apim-subscription-key",
    "cookie",
    "openai-organization",
    "openai-project",
    "x-goog-user-project",
    "x-amz-security-token",
    "x-amz-date",
    "x-amz-content-sha256",
)
_CREDENTIAL_HEADER_PREFIX = "x-amz-"

# Query parameters by which a provider accepts a credential or chooses
# what the gateway's credential is billed to (Gemini's ``key``, Azure's
# ``api-key``, Azure API Management's ``subscription-key``, Google's
# ``access_token``, ``oauth_token`` and ``userProject``, the parts of a
# presigned AWS URL); removed from every request like the headers.
# Compared in lower case.
CLIENT_CREDENTIAL_QUERY_PARAMETERS = frozenset(
    {
        "key",
        "api-key",
        "api_key",
        "apikey",
        "subscription-key",
        "access_token",
        "oauth_token",
        "userproject",
    }
)
_CREDENTIAL_QUERY_PREFIX = "x-amz-"
# Google reads every system parameter also under a "$" name ("$key").
_GOOGLE_SYSTEM_PARAMETER_MARK = "$"


def client_credential_headers(sent: Mapping[str, str]) -> list[str]:
    """The credential headers to remove from a request whose headers (lower
    case names to values) are ``sent``: the fixed list, every ``x-amz-*``
    one, and any other that holds a gateway key, wherever the client put it
    (a gateway key is this gateway's credential, never a provider's)."""
    extra = [
        name
        for name, value in sent.items()
        if name.startswith(_CREDENTIAL_HEADER_PREFIX)
        or (not name.startswith(":") and holds_key(value))
    ]
    return [*CLIENT_CREDENTIAL_HEADERS, *(n for n in extra if n not in _FIXED)]


_FIXED = frozenset(CLIENT_CREDENTIAL_HEADERS)


_FILE_RECHECK_S = 1.0


def without_query_credentials(path: str) -> str:
    """``path`` with every credential query parameter removed; the other
    parameters keep their bytes and order."""
    base, sep, query = path.partition("?")
    if not sep:
        return path
    kept = [item for item in query.split("&") if not _is_credential(item)]
    return f"{base}?{'&'.join(kept)}" if kept else base


def _is_credential(item: str) -> bool:
    # Servers read "key[]", "KEY", "key%00" or "%24key" as "key"; so does this.
    name = unquote_plus(item.partition("=")[0]).lower()
    name = name.strip("\x00\t ").removesuffix("[]").strip("\x00\t ")
    name = name.removeprefix(_GOOGLE_SYSTEM_PARAMETER_MARK)
    return name in CLIENT_CREDENTIAL_QUERY_PARAMETERS or name.startswith(
        _CREDENTIAL_QUERY_PREFIX
    )


class Secret:
    """A credential value that does not print itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass
class _FileState:
    stamp: tuple[int, int, int] | None = None
    secret: Secret | None = None
    checked_at: float = 0.0
    broken: bool = False  # the file cannot be used; ``secret`` is the last good


class CredentialReader:
    """Reads credentials from environment variables or files.

    A file is re-read when its inode, size or modification time changes
    (checked at most once a second), so a rotated key takes effect without a
    restart. A file that has been read once and is then missing, empty or
    unusable (a rotation half done: truncated before it is rewritten, or
    removed before it is written again) leaves its last good secret in
    force, with one warning, until it can be read again. Shared by all
    policies of a process; thread-safe.
    """

    def __init__(self) -> None:
        self._files: dict[tuple[str, bool], _FileState] = {}
        self._lock = threading.Lock()
        self._google: dict[str, GoogleTokens] = {}

    def read(self, source: CredentialSource) -> Secret:
        """The current secret of ``source``. Raises ``CredentialError``.

        A ``raw`` secret goes into a header as it is, so it must be one line
        of printable ASCII; a service account key is JSON and may span lines.
        """
        one_line = source.format == "raw"
        if source.env is not None:
            return _from_env(source.env, one_line=one_line)
        return self._from_file(source.file or "", one_line=one_line)

    async def current(self, source: CredentialSource) -> Secret:
        """``read``, plus minted tokens for ``google_service_account``
        sources (refreshed off the event loop before they expire)."""
        if source.format != "google_service_account":
            return self.read(source)
        key = source.env or source.file or ""
        tokens = self._google.setdefault(key, GoogleTokens(lambda: self.read(source)))
        return await tokens.token()

    def _from_file(self, path: str, *, one_line: bool) -> Secret:
        with self._lock:
            state = self._files.setdefault((path, one_line), _FileState())
            now = time.monotonic()
            if state.secret is not None and now - state.checked_at < _FILE_RECHECK_S:
                return state.secret
            state.checked_at = now
            try:
                stamp = _stamp(path)
                if state.secret is None or stamp != state.stamp:
                    state.secret = _read_file(path, one_line=one_line)
                    state.stamp = stamp
            except CredentialError as exc:
                if state.secret is None:
                    raise
                _keep_last_good(state, path, exc)
                return state.secret
            state.broken = False
            return state.secret


class GoogleTokens:
    """OAuth access tokens minted from a Google service account key.

    A token is sent until ``EXPIRY_SKEW_S`` before it expires. From
    ``REFRESH_MARGIN_S`` before that, a new one is minted in the background
    while the current one is still sent, so no call waits on Google and a
    failed mint (Google unreachable, a bad key) costs nothing while the
    current token lasts: it is logged and tried again ``RETRY_S`` later.
    Only a call without a usable token waits for the mint, and it fails
    fast with ``CredentialError`` while the last mint failed less than
    ``RETRY_S`` ago. Mints run in a worker thread, one at a time, each
    bounded by ``MINT_TIMEOUT_S`` per connection and read; the key is read
    again for each, so a rotated key file is picked up.
    """

    REFRESH_MARGIN_S = 300
    EXPIRY_SKEW_S = 30
    RETRY_S = 5.0
    MINT_TIMEOUT_S = 10.0

    def __init__(self, key_of: Callable[[], Secret]) -> None:
        self._key_of = key_of
        self._credentials: Any = None
        self._minting: asyncio.Task[None] | None = None
        self._failure: CredentialError | None = None
        self._failed_at = -self.RETRY_S

    async def token(self) -> Secret:
        """A token valid for ``EXPIRY_SKEW_S`` at least. Raises
        ``CredentialError`` when there is none and none can be minted."""
        left_s = self._seconds_left()
        if left_s <= self.REFRESH_MARGIN_S and self._may_retry():
            minting = self._mint_once()
            if left_s <= self.EXPIRY_SKEW_S:
                await asyncio.shield(minting)  # a call that leaves stops no mint

        if self._seconds_left() <= self.EXPIRY_SKEW_S:
            # A fresh error each time: re-raising the stored one would grow
            # its traceback with every call.
            reason = self._failure or "no usable Google access token"
            raise CredentialError(str(reason)) from self._failure
        return Secret(self._credentials.token)

    def _seconds_left(self) -> float:
        credentials = self._credentials
        if credentials is None or not credentials.token:
            return 0.0
        if credentials.expiry is None:  # google-auth: a token without an end
            return float("inf")
        left = credentials.expiry - datetime.now(UTC).replace(tzinfo=None)
        return left.total_seconds()

    def _may_retry(self) -> bool:
        running = self._minting is not None and not self._minting.done()
        return running or time.monotonic() - self._failed_at >= self.RETRY_S

    def _mint_once(self) -> asyncio.Task[None]:
        """The mint in progress, or a new one."""
        if self._minting is None or self._minting.done():
            self._minting = asyncio.create_task(self._mint())
        return self._minting

    async def _mint(self) -> None:
        try:
            self._credentials = await asyncio.to_thread(self._refreshed)
        except CredentialError as exc:
            self._failure, self._failed_at = exc, time.monotonic()
            log.warning("Google access token not minted", extra={"reason": str(exc)})
            return
        self._failure = None

    def _refreshed(self) -> Any:
        from google.auth import exceptions, transport
        from google.oauth2 import service_account

        timeout = urllib3.Timeout(connect=self.MINT_TIMEOUT_S, read=self.MINT_TIMEOUT_S)
        try:
            info = json.loads(self._key_of().reveal())
            if not isinstance(info, dict):
                raise TypeError("a service account key is a JSON object")
            credentials = service_account.Credentials.from_service_account_info(
                info, scopes=["https://www.googleapis.com/auth/cloud-platform"]
            )
            pool = urllib3.PoolManager(timeout=timeout)
            credentials.refresh(transport.urllib3.Request(pool))
        except (ValueError, KeyError, TypeError, exceptions.GoogleAuthError) as exc:
            raise CredentialError(
                f"cannot mint a Google access token: {type(exc).__name__}"
            ) from exc
        return credentials


def _from_env(name: str, *, one_line: bool) -> Secret:
    value = os.environ.get(name, "").strip()
    if not value:
        raise CredentialError(f"environment variable {name} is not set or empty")
    if one_line and not _header_safe(value):
        raise CredentialError(f"environment variable {name} {_NOT_ONE_LINE}")
    return Secret(value)


# Said of a secret that would make Envoy fail the request (a line break, a
# NUL) or reach the provider as bytes no key is made of; never its value.
_NOT_ONE_LINE = "is not one line of printable ASCII, as a key in a header must be"


def _header_safe(value: str) -> bool:
    return value.isascii() and value.isprintable()


def _keep_last_good(state: _FileState, path: str, exc: CredentialError) -> None:
    """Note that the file at ``path`` broke; warn once per breakage."""
    if state.broken:
        return
    state.broken = True
    log.warning(
        "credential file unusable, its last good credential stays in force",
        extra={"path": path, "reason": str(exc)},
    )


def _stamp(path: str) -> tuple[int, int, int]:
    try:
        info = os.stat(path)
    except OSError as exc:
        raise CredentialError(f"credential file {path} cannot be read") from exc
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def _read_file(path: str, *, one_line: bool) -> Secret:
    """The stripped text of ``path``; a leading byte order mark (editors on
    Windows write one) is not part of it. With ``one_line``, a text that
    no header can carry is refused."""
    try:
        with open(path, encoding="utf-8-sig") as handle:
            value = handle.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialError(f"credential file {path} cannot be read") from exc
    if not value:
        raise CredentialError(f"credential file {path} is empty")
    if one_line and not _header_safe(value):
        raise CredentialError(f"credential file {path} {_NOT_ONE_LINE}")
    return Secret(value)
