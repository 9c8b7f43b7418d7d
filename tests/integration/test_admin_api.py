"""The admin gRPC API on a real port against a real redis-server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
import pytest
import redis.asyncio as aioredis

from extproc.admin._gen import admin_pb2 as pb
from extproc.admin._gen import admin_pb2_grpc as pb_grpc
from extproc.admin.service import start_admin_server
from extproc.budgets.store import Attribution, BucketSpec, BudgetStore, Settlement
from extproc.errors import ConfigError
from extproc.keys import KeyRing, looks_like_key
from extproc.local import RedisProcess, free_port
from extproc.policy import Policy, parse_policy

TOKEN = "s3cret-admin-token-0123456789"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
POLICY_YAML = """
tenant: {tenant}
providers: {{openai: {{family: openai, route_prefix: /openai}}}}
users:
  default: {{budget: {{capacity_usd: "10", refill_usd: "10", refill_every: 1d}}}}
"""
MONTHLY_300 = pb.Budget(
    calendar=pb.CalendarBudget(amount_micro_usd=300_000_000, period=pb.PERIOD_MONTH),
    soft_limits_percent=[100, 80],
)


@dataclass
class Api:
    stub: pb_grpc.AdminStub
    policy: Policy
    redis_url: str


@pytest.fixture
async def api(redis_server: RedisProcess) -> AsyncIterator[Api]:
    policy = parse_policy(POLICY_YAML.format(tenant=f"t-{uuid.uuid4().hex[:8]}"))
    listen = f"127.0.0.1:{free_port()}"
    server = await start_admin_server(
        listen=listen, token=TOKEN, redis_url=redis_server.url, policy_of=lambda: policy
    )
    channel = grpc.aio.insecure_channel(listen)

    yield Api(pb_grpc.AdminStub(channel), policy, redis_server.url)

    await channel.close()
    await server.stop(0)


async def _code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call
    return failed.value.code()


@pytest.mark.parametrize(
    "method, request_",
    [
        ("GetBudget", pb.GetBudgetRequest(scope="org")),
        ("SetBudget", pb.SetBudgetRequest(scope="org", budget=MONTHLY_300)),
        ("DeleteBudget", pb.DeleteBudgetRequest(scope="org")),
        ("ListBudgets", pb.ListBudgetsRequest()),
        ("IssueKey", pb.IssueKeyRequest(identity="alice")),
        ("ListKeys", pb.ListKeysRequest()),
        ("RevokeKey", pb.RevokeKeyRequest(key_id="0123456789ab")),
        ("GetSpend", pb.GetSpendRequest(first_day="2027-03-01", last_day="2027-03-01")),
    ],
)
async def test_every_method_refuses_a_call_without_the_token(
    api, method, request_
) -> None:
    assert grpc.StatusCode.UNAUTHENTICATED == await _code(
        getattr(api.stub, method)(request_)
    )


@pytest.mark.parametrize(
    "metadata",
    [
        (("authorization", "Bearer wrong-token-of-some-length"),),
        (("authorization", f"Bearer {TOKEN}x"),),
        (("authorization", f"Basic {TOKEN}"),),
        (("authorization", TOKEN),),
        (("x-api-key", TOKEN),),
    ],
)
async def test_a_wrong_or_misplaced_token_is_unauthenticated(api, metadata) -> None:
    call = api.stub.ListKeys(pb.ListKeysRequest(), metadata=metadata)

    assert grpc.StatusCode.UNAUTHENTICATED == await _code(call)


async def test_refused_call_changes_nothing(api) -> None:
    await _code(api.stub.IssueKey(pb.IssueKeyRequest(identity="mallory")))

    listed = await api.stub.ListKeys(pb.ListKeysRequest(), metadata=AUTH)

    assert [] == list(listed.keys)


async def test_set_budget_then_get_it_back_as_the_override(api) -> None:
    request = pb.SetBudgetRequest(scope="user:alice", budget=MONTHLY_300)

    set_reply = await api.stub.SetBudget(request, metadata=AUTH)
    got = await api.stub.GetBudget(
        pb.GetBudgetRequest(scope="user:alice"), metadata=AUTH
    )

    assert set_reply == got
    assert pb.BUDGET_SOURCE_OVERRIDE == got.source
    assert pb.Budget(calendar=MONTHLY_300.calendar, soft_limits_percent=[80, 100]) == (
        got.effective
    )
    assert 10_000_000 == got.policy.refilled.capacity_micro_usd
    assert not got.HasField("bucket")


async def test_policy_budget_is_reported_where_no_override_is_set(api) -> None:
    got = await api.stub.GetBudget(pb.GetBudgetRequest(scope="user:bob"), metadata=AUTH)

    assert (pb.BUDGET_SOURCE_POLICY, False) == (got.source, got.HasField("override"))
    assert (
        pb.RefilledBudget(
            capacity_micro_usd=10_000_000,
            refill_micro_usd=10_000_000,
            refill_every="1d",
        )
        == got.effective.refilled
    )


async def test_a_scope_without_budget_reports_none(api) -> None:
    got = await api.stub.GetBudget(pb.GetBudgetRequest(scope="team:x"), metadata=AUTH)

    assert (pb.BUDGET_SOURCE_NONE, False) == (got.source, got.HasField("effective"))


async def test_bucket_state_is_read_live(api) -> None:
    client = aioredis.from_url(api.redis_url)
    store = BudgetStore(client, api.policy.tenant, lease_ms=60_000)
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    await store.reserve(
        "r1",
        [BucketSpec("user:alice", 10_000_000, 10_000_000, 86_400_000)],
        estimate_micro_usd=4_000_000,
        estimate_tokens=0,
        record={},
        now_ms=now_ms,
    )
    await client.aclose()

    got = await api.stub.GetBudget(
        pb.GetBudgetRequest(scope="user:alice"), metadata=AUTH
    )

    assert (6_000_000, 10_000_000) == (
        got.bucket.level_micro_usd,
        got.bucket.capacity_micro_usd,
    )
    assert 6_000_000 <= got.bucket.level_now_micro_usd < 6_100_000


@pytest.mark.parametrize(
    "request_",
    [
        pb.SetBudgetRequest(scope="everyone", budget=MONTHLY_300),
        pb.SetBudgetRequest(scope="user:alice"),
        pb.SetBudgetRequest(
            scope="user:alice",
            budget=pb.Budget(calendar=pb.CalendarBudget(amount_micro_usd=1)),
        ),
        pb.SetBudgetRequest(
            scope="user:alice",
            budget=pb.Budget(refilled=pb.RefilledBudget(capacity_micro_usd=-1)),
        ),
        pb.SetBudgetRequest(
            scope="user:alice",
            budget=pb.Budget(
                refilled=pb.RefilledBudget(capacity_micro_usd=1, refill_every="often")
            ),
        ),
    ],
)
async def test_invalid_budget_request_is_invalid_argument(api, request_) -> None:
    assert grpc.StatusCode.INVALID_ARGUMENT == await _code(
        api.stub.SetBudget(request_, metadata=AUTH)
    )


async def test_delete_budget_removes_the_override_once(api) -> None:
    await api.stub.SetBudget(
        pb.SetBudgetRequest(scope="org", budget=MONTHLY_300), metadata=AUTH
    )

    first = await api.stub.DeleteBudget(
        pb.DeleteBudgetRequest(scope="org"), metadata=AUTH
    )
    second = await api.stub.DeleteBudget(
        pb.DeleteBudgetRequest(scope="org"), metadata=AUTH
    )

    assert (True, False) == (first.deleted, second.deleted)


async def test_list_budgets_shows_overridden_scopes(api) -> None:
    for scope in ("team:platform", "org"):
        await api.stub.SetBudget(
            pb.SetBudgetRequest(scope=scope, budget=MONTHLY_300), metadata=AUTH
        )

    listed = await api.stub.ListBudgets(pb.ListBudgetsRequest(), metadata=AUTH)

    assert ["org", "team:platform"] == [b.scope for b in listed.budgets]


async def test_issued_key_identifies_its_identity_at_the_gateway(api) -> None:
    issued = await api.stub.IssueKey(
        pb.IssueKeyRequest(identity="alice", tool="claude-code", expires_in="30d"),
        metadata=AUTH,
    )

    client = aioredis.from_url(api.redis_url)
    record = await KeyRing(client, api.policy.tenant).identify(issued.key)
    await client.aclose()

    assert looks_like_key(issued.key)
    assert ("alice", "claude-code", True) == (
        issued.record.identity,
        issued.record.tool,
        issued.record.active,
    )
    assert issued.record.expires_ms - issued.record.created_ms == 30 * 86_400_000
    assert ("alice", issued.record.key_id) == (record.identity, record.key_id)


async def test_listed_keys_never_carry_the_key(api) -> None:
    issued = await api.stub.IssueKey(
        pb.IssueKeyRequest(identity="alice"), metadata=AUTH
    )

    listed = await api.stub.ListKeys(pb.ListKeysRequest(), metadata=AUTH)

    assert [issued.record.key_id] == [k.key_id for k in listed.keys]
    assert issued.key.encode() not in listed.SerializeToString()
    assert not listed.keys[0].HasField("expires_ms")


async def test_revoked_key_is_reported_inactive_and_stops_identifying(api) -> None:
    issued = await api.stub.IssueKey(
        pb.IssueKeyRequest(identity="alice"), metadata=AUTH
    )

    revoked = await api.stub.RevokeKey(
        pb.RevokeKeyRequest(key_id=issued.record.key_id), metadata=AUTH
    )

    client = aioredis.from_url(api.redis_url)
    record = await KeyRing(client, api.policy.tenant).identify(issued.key)
    await client.aclose()
    assert (False, True, None) == (
        revoked.record.active,
        revoked.record.HasField("revoked_ms"),
        record,
    )


async def test_revoking_an_unknown_key_is_not_found(api) -> None:
    call = api.stub.RevokeKey(pb.RevokeKeyRequest(key_id="0123456789ab"), metadata=AUTH)

    assert grpc.StatusCode.NOT_FOUND == await _code(call)


async def test_spend_is_grouped_by_the_requested_dimensions(api) -> None:
    client = aioredis.from_url(api.redis_url)
    store = BudgetStore(client, api.policy.tenant, lease_ms=60_000)
    day = datetime(2027, 3, 1, 12, tzinfo=UTC)
    calls = [
        ("alice", "platform", "openai", 100),
        ("bob", "platform", "openai", 20),
        ("carol", "research", "anthropic", 3),
    ]
    for i, (identity, team, provider, cost) in enumerate(calls):
        await store.reserve(
            f"r{i}",
            [],
            estimate_micro_usd=cost,
            estimate_tokens=0,
            record={},
            now_ms=int(day.timestamp() * 1000),
        )
        await store.settle(
            Settlement(f"r{i}", cost, 1, 1, False, "metered", {}),
            [],
            Attribution(identity, provider, "m", team=team),
            now=day,
        )
    await client.aclose()

    reply = await api.stub.GetSpend(
        pb.GetSpendRequest(
            first_day="2027-03-01",
            last_day="2027-03-02",
            by=[pb.DIMENSION_TEAM, pb.DIMENSION_PROVIDER],
        ),
        metadata=AUTH,
    )

    assert [
        ({"team": "platform", "provider": "openai"}, 120, 2),
        ({"team": "research", "provider": "anthropic"}, 3, 1),
    ] == [(dict(g.dimensions), g.cost_micro_usd, g.requests) for g in reply.groups]
    assert 123 == reply.total_cost_micro_usd


@pytest.mark.parametrize(
    "request_",
    [
        pb.GetSpendRequest(first_day="March", last_day="2027-03-01"),
        pb.GetSpendRequest(first_day="2027-03-02", last_day="2027-03-01"),
        pb.GetSpendRequest(first_day="2020-01-01", last_day="2027-03-01"),
        pb.GetSpendRequest(
            first_day="2027-03-01", last_day="2027-03-01", by=[pb.DIMENSION_UNSPECIFIED]
        ),
    ],
)
async def test_invalid_spend_request_is_invalid_argument(api, request_) -> None:
    assert grpc.StatusCode.INVALID_ARGUMENT == await _code(
        api.stub.GetSpend(request_, metadata=AUTH)
    )


async def test_redis_not_answering_is_unavailable() -> None:
    policy = parse_policy(POLICY_YAML.format(tenant="t"))
    listen = f"127.0.0.1:{free_port()}"
    server = await start_admin_server(
        listen=listen,
        token=TOKEN,
        redis_url="redis://127.0.0.1:1/0",
        policy_of=lambda: policy,
    )
    async with grpc.aio.insecure_channel(listen) as channel:
        call = pb_grpc.AdminStub(channel).ListKeys(pb.ListKeysRequest(), metadata=AUTH)
        code = await _code(call)
    await server.stop(0)

    assert grpc.StatusCode.UNAVAILABLE == code


async def test_a_short_token_is_refused_at_start(redis_server) -> None:
    with pytest.raises(ConfigError):
        await start_admin_server(
            listen=f"127.0.0.1:{free_port()}",
            token="short",
            redis_url=redis_server.url,
            policy_of=lambda: parse_policy(POLICY_YAML.format(tenant="t")),
        )


async def test_a_taken_port_is_refused_at_start(api, redis_server) -> None:
    listen = f"127.0.0.1:{free_port()}"
    first = await start_admin_server(
        listen=listen,
        token=TOKEN,
        redis_url=redis_server.url,
        policy_of=lambda: api.policy,
    )
    try:
        with pytest.raises(ConfigError):
            await start_admin_server(
                listen=listen,
                token=TOKEN,
                redis_url=redis_server.url,
                policy_of=lambda: api.policy,
            )
    finally:
        await first.stop(0)


async def test_spend_with_redis_not_answering_is_unavailable() -> None:
    policy = parse_policy(POLICY_YAML.format(tenant="t"))
    listen = f"127.0.0.1:{free_port()}"
    server = await start_admin_server(
        listen=listen,
        token=TOKEN,
        redis_url="redis://127.0.0.1:1/0",
        policy_of=lambda: policy,
    )
    request = pb.GetSpendRequest(first_day="2027-03-01", last_day="2027-03-01")
    async with grpc.aio.insecure_channel(listen) as channel:
        code = await _code(pb_grpc.AdminStub(channel).GetSpend(request, metadata=AUTH))
    await server.stop(0)

    assert grpc.StatusCode.UNAVAILABLE == code
