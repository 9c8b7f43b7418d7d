"""Fixtures of the budget store's tests: a Redis Cluster beside the server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.cluster import RedisClusterProcesses


@pytest.fixture(scope="session")
def redis_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RedisClusterProcesses]:
    """One three-master Redis Cluster for the session; tests keep apart by
    tenant."""
    workdir = tmp_path_factory.mktemp("redis-cluster")
    with RedisClusterProcesses(workdir=workdir) as cluster:
        yield cluster
