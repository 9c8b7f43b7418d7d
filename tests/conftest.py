"""Fixtures shared by every layer: a real redis-server on a free port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from extproc.local import RedisProcess


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """One redis-server for the session; tests keep apart by key prefix."""
    with RedisProcess(workdir=tmp_path_factory.mktemp("redis")) as server:
        yield server
