"""Gateway keys without Redis: shape, headers, records and the KeyRing cache."""

from __future__ import annotations

import logging

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from extproc import keys
from extproc.errors import StoreUnavailable
from extproc.keys import (
    KeyRecord,
    KeyRing,
    key_digest,
    looks_like_key,
    presented_key,
)

NOW_S = 1_800_000_000.0
NOW_MS = int(NOW_S * 1000)
KEY = "tgk_" + "A" * 20 + "b-_9" * 5
OTHER_KEY = "tgk_" + "Z" * 40


class Clock:
    def __init__(self, now_s: float = NOW_S) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


class FakeRedis:
    """HGET over an in-memory hash, counting the calls."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[str, str]] = {}
        self.hgets = 0
        self.fail = False

    async def hget(self, name: str, field: str) -> bytes | None:
        self.hgets += 1
        if self.fail:
            raise RedisConnectionError("connection refused")
        value = self.hashes.get(name, {}).get(field)
        return None if value is None else value.encode()


def _record(**changes: object) -> KeyRecord:
    values = {
        "key_id": key_digest(KEY)[:12],
        "identity": "alice",
        "tool": "claude-code",
        "created_ms": NOW_MS - 1000,
        "expires_ms": None,
        "revoked_ms": None,
    }
    return KeyRecord(**{**values, **changes})


def _ring(
    record: KeyRecord | None = None, **options: object
) -> tuple[KeyRing, FakeRedis, Clock]:
    client, clock = FakeRedis(), Clock()
    if record is not None:
        client.hashes[keys.keys_hash("t")] = {key_digest(KEY): record.to_json()}
    return KeyRing(client, "t", clock=clock, **options), client, clock


def test_new_key_is_the_prefix_and_40_url_safe_characters() -> None:
    key = keys.new_key()

    assert (True, 44) == (looks_like_key(key), len(key))


def test_new_keys_differ() -> None:
    assert keys.new_key() != keys.new_key()


@pytest.mark.parametrize(
    "value",
    [
        "sk-proj-abc",
        "tgk_short",
        "tgk_" + "a" * 41,
        "tgk_" + "a" * 39 + " ",
        "TGK_" + "a" * 40,
        "tgk_" + "a" * 39 + "=",
        "tgk_" + "a" * 40 + "\n",
    ],
)
def test_text_not_shaped_like_a_gateway_key_is_not_one(value: str) -> None:
    assert not looks_like_key(value)


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": f"Bearer {KEY}"},
        {"authorization": f"bearer  {KEY} "},
        {"x-api-key": KEY},
        {"api-key": KEY},
        {"x-goog-api-key": KEY},
    ],
)
def test_presented_key_is_found_where_sdks_send_keys(headers: dict[str, str]) -> None:
    assert KEY == presented_key(headers)


def test_a_provider_key_in_authorization_does_not_hide_a_gateway_key() -> None:
    headers = {"authorization": "Bearer sk-live-provider", "x-api-key": KEY}

    assert KEY == presented_key(headers)


@pytest.mark.parametrize("value", ["tgk_x", "tgk_" + "A" * 39, "tgk_" + "A" * 41])
def test_a_malformed_gateway_key_is_still_presented(value: str) -> None:
    # Presented, so that the key ring refuses it as unknown; passing it over
    # would bill the identity header instead of refusing the key.
    assert value == presented_key({"authorization": f"Bearer {value}"})


def test_a_key_under_another_auth_scheme_is_not_presented() -> None:
    assert None is presented_key({"authorization": f"Basic {KEY}"})


def test_record_is_expired_from_its_expiry_on() -> None:
    record = _record(expires_ms=NOW_MS)

    assert ("active", "expired") == (record.status(NOW_MS - 1), record.status(NOW_MS))


def test_revoked_record_is_revoked_whatever_its_expiry() -> None:
    assert "revoked" == _record(revoked_ms=NOW_MS, expires_ms=NOW_MS - 5).status(NOW_MS)


def test_record_survives_its_json() -> None:
    record = _record(expires_ms=NOW_MS + 5, tool=None)

    assert record == KeyRecord.from_json(record.to_json())


@pytest.mark.parametrize("text", ["[]", '{"identity": "alice"}', "not json"])
def test_unreadable_record_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        KeyRecord.from_json(text)


async def test_identify_returns_the_record_of_an_active_key() -> None:
    ring, _, _ = _ring(_record())

    assert _record() == await ring.identify(KEY)


async def test_identify_asks_redis_once_per_cache_interval() -> None:
    ring, client, clock = _ring(_record(), cache_ttl_s=5.0)

    await ring.identify(KEY)
    clock.now_s += 4.9
    await ring.identify(KEY)
    clock.now_s += 0.2
    await ring.identify(KEY)

    assert 2 == client.hgets


async def test_unknown_key_is_none_and_cached_too() -> None:
    ring, client, _ = _ring()

    answers = [await ring.identify(KEY), await ring.identify(KEY)]

    assert ([None, None], 1) == (answers, client.hgets)


async def test_text_that_is_no_key_never_reaches_redis() -> None:
    ring, client, _ = _ring(_record())

    assert (None, 0) == (await ring.identify("sk-provider-key"), client.hgets)


async def test_cached_key_stops_working_at_its_expiry() -> None:
    ring, _, clock = _ring(_record(expires_ms=NOW_MS + 1000))

    before = await ring.identify(KEY)
    clock.now_s += 1.0
    after = await ring.identify(KEY)

    assert (True, None) == (before is not None, after)


async def test_revocation_takes_effect_when_the_cached_answer_runs_out() -> None:
    ring, client, clock = _ring(_record(), cache_ttl_s=5.0)
    await ring.identify(KEY)
    client.hashes[keys.keys_hash("t")][key_digest(KEY)] = _record(
        revoked_ms=NOW_MS
    ).to_json()

    clock.now_s += 1
    still = await ring.identify(KEY)
    clock.now_s += 5
    revoked = await ring.identify(KEY)

    assert (True, None) == (still is not None, revoked)


async def test_cached_answer_is_matched_on_the_full_digest_in_constant_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compared: list[tuple[str, str]] = []
    real = keys.hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(keys.hmac, "compare_digest", spy)
    ring, _, _ = _ring(_record())
    await ring.identify(KEY)

    await ring.identify(KEY)

    assert [(key_digest(KEY), key_digest(KEY))] == compared


async def test_a_different_key_under_a_cached_id_is_looked_up_not_served() -> None:
    ring, client, _ = _ring(_record())
    await ring.identify(KEY)
    # Forge a cache entry under OTHER_KEY's id holding KEY's digest and record.
    entry = ring._cache.pop(key_digest(KEY)[:12])
    ring._cache[key_digest(OTHER_KEY)[:12]] = entry

    assert (None, 2) == (await ring.identify(OTHER_KEY), client.hgets)


async def test_the_oldest_cached_answer_goes_first_past_the_bound() -> None:
    ring, client, _ = _ring(_record(), max_cached=2)
    for key in (KEY, OTHER_KEY, "tgk_" + "Y" * 40):
        await ring.identify(key)

    await ring.identify(KEY)

    assert 4 == client.hgets


async def test_redis_not_answering_is_store_unavailable() -> None:
    ring, client, _ = _ring(_record())
    client.fail = True

    with pytest.raises(StoreUnavailable) as raised:
        await ring.identify(KEY)

    assert isinstance(raised.value.__cause__, RedisConnectionError)


async def test_unreadable_stored_record_identifies_no_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ring, client, _ = _ring()
    client.hashes[keys.keys_hash("t")] = {key_digest(KEY): "{broken"}

    with caplog.at_level(logging.WARNING, logger="extproc.keys"):
        answer = await ring.identify(KEY)

    assert (None, ["unreadable key record ignored"]) == (
        answer,
        [r.getMessage() for r in caplog.records],
    )
