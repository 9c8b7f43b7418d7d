"""What `tollgate up` prints when it is ready."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from extproc.local.up import _banner


def _printed(capsys: pytest.CaptureFixture[str], redis_url: str) -> str:
    envoy = SimpleNamespace(listen_port=10000)
    extproc = SimpleNamespace(address="127.0.0.1:50051")
    _banner(envoy, extproc, redis_url, Path("policy.yaml"), Path("logs"), True)
    return capsys.readouterr().out


def test_the_banner_never_prints_a_redis_password(capsys) -> None:
    out = _printed(capsys, "redis://tollgate:s3cret-pw@redis.internal:6379/0")

    assert ("s3cret-pw" in out, "redis://tollgate:***@redis.internal:6379/0" in out) == (
        False,
        True,
    )


def test_the_spend_example_carries_a_url_without_a_password(capsys) -> None:
    out = _printed(capsys, "redis://127.0.0.1:6390/0")

    assert "TOLLGATE_REDIS_URL=redis://127.0.0.1:6390/0 TOLLGATE_POLICY_FILE=" in out
