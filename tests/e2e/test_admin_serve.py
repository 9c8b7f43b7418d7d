"""The admin API as `tollgate serve` runs it: off by default, token-protected,
and its budget overrides reach the request path."""

from __future__ import annotations

import secrets
import time

import grpc
import pytest

from extproc.admin._gen import admin_pb2, admin_pb2_grpc
from extproc.local import free_port
from tests.e2e.conftest import running_gateway
from tests.e2e.harness import REPLAY_HEADER

pytestmark = pytest.mark.e2e

TOKEN = "admin-" + secrets.token_hex(16)


@pytest.fixture
def admin_gateway(redis_server, tmp_path):
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN)
    port = free_port()
    settings = {
        "admin_listen": f"127.0.0.1:{port}",
        "admin_token_file": str(token_file),
    }
    with running_gateway(
        tmp_path / "gw",
        redis_server,
        tenant="adm-" + secrets.token_hex(3),
        settings=settings,
    ) as gateway:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield gateway, admin_pb2_grpc.AdminStub(channel)


def test_admin_call_without_the_token_is_unauthenticated(admin_gateway) -> None:
    _, admin = admin_gateway

    with pytest.raises(grpc.RpcError) as refused:
        admin.ListBudgets(admin_pb2.ListBudgetsRequest(), timeout=5)

    assert grpc.StatusCode.UNAUTHENTICATED == refused.value.code()


def test_budget_set_through_the_api_refuses_the_next_call(admin_gateway) -> None:
    gateway, admin = admin_gateway
    auth = (("authorization", f"Bearer {TOKEN}"),)
    tiny = admin_pb2.Budget(
        refilled=admin_pb2.RefilledBudget(
            capacity_micro_usd=1, refill_micro_usd=0, refill_every="1d"
        )
    )

    admin.SetBudget(
        admin_pb2.SetBudgetRequest(scope="user:api-capped", budget=tiny),
        metadata=auth,
        timeout=5,
    )
    status = admin.GetBudget(
        admin_pb2.GetBudgetRequest(scope="user:api-capped"), metadata=auth, timeout=5
    )

    assert 1 == status.effective.refilled.capacity_micro_usd
    deadline = time.monotonic() + 5  # overrides refresh every policy poll (200 ms)
    answer = 200
    while answer != 429 and time.monotonic() < deadline:
        answer = gateway.client.post(
            "/openai/v1/chat/completions",
            {"model": "gpt-4o", "max_tokens": 5, "messages": []},
            {
                "x-tollgate-identity": "api-capped",
                REPLAY_HEADER: "openai_chat_nonstream_docs_default",
            },
        ).status
        time.sleep(0.2)
    assert 429 == answer
