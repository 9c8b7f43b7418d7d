"""What the gateway checks of a real redis-server at start."""

from __future__ import annotations

import logging

import pytest

from extproc.budgets.clients import open_async_client
from extproc.budgets.preflight import check_store
from extproc.errors import ConfigError
from extproc.local import RedisProcess, free_port

EVICTION_WARNING = "redis may evict budget keys"


async def _check(url: str) -> None:
    client = await open_async_client(url)
    try:
        await check_store(client, "default", url)
    finally:
        await client.aclose()


async def _check_server(tmp_path, *args: str, url: str | None = None) -> None:
    with RedisProcess(workdir=tmp_path, extra_args=args) as redis:
        await _check((url or redis.url).replace("PORT", str(redis.port)))


async def test_a_redis_that_never_evicts_passes_quietly(tmp_path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        await _check_server(tmp_path, "--maxmemory-policy", "noeviction")

    assert "" == caplog.text


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-lru", "allkeys-lfu"])
async def test_an_evicting_redis_is_warned_of(tmp_path, caplog, policy) -> None:
    await _check_server(tmp_path, "--maxmemory", "100mb", "--maxmemory-policy", policy)

    assert EVICTION_WARNING in caplog.text
    assert policy == caplog.records[-1].maxmemory_policy


async def test_a_redis_that_hides_its_policy_is_warned_of(tmp_path, caplog) -> None:
    # Managed services rename or block INFO and CONFIG.
    await _check_server(tmp_path, "--rename-command", "INFO", "")

    assert "cannot read redis's eviction policy" in caplog.text


async def test_a_user_that_may_not_run_scripts_stops_the_start(tmp_path) -> None:
    acl = ("--user", "app", "on", ">s3cret-pw", "~*", "+@all", "-evalsha", "-eval")

    with pytest.raises(ConfigError) as refused:
        await _check_server(
            tmp_path, *acl, url="redis://app:s3cret-pw@127.0.0.1:PORT/0"
        )

    assert "may not run the budget scripts" in str(refused.value)
    assert "s3cret-pw" not in str(refused.value)


async def test_a_user_kept_from_the_budget_keys_stops_the_start(tmp_path) -> None:
    acl = ("--user", "app", "on", ">pw", "~cache:*", "+@all")

    with pytest.raises(ConfigError, match="tg:\\{default\\}:bucket:preflight"):
        await _check_server(tmp_path, *acl, url="redis://app:pw@127.0.0.1:PORT/0")


async def test_a_wrong_password_stops_the_start_without_showing_it(tmp_path) -> None:
    with pytest.raises(ConfigError) as refused:
        await _check_server(
            tmp_path,
            "--requirepass",
            "rotated",
            url="redis://:old%40pass@127.0.0.1:PORT/0",
        )

    assert "refused the credentials" in str(refused.value)
    assert "old" not in str(refused.value).replace("redis://:***", "")


async def test_a_redis_not_answering_at_start_is_a_warning(caplog) -> None:
    await _check(f"redis://127.0.0.1:{free_port()}/0")

    assert "redis not answering at start" in caplog.text
