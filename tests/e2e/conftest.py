"""The gateway under test: Redis, stand-in provider, ext_proc server, Envoy."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from extproc.local import (
    EnvoyProcess,
    RedisProcess,
    StandIn,
    free_port,
    render_local_config,
)
from extproc.local.extproc import ExtprocProcess
from tests.e2e.harness import Client, Ledger, replay_responder
from tests.service_accounts import service_account_key

TENANT = "e2e"
PROVIDER_ENV = {
    "E2E_AZURE_KEY": "azure-gateway-" + secrets.token_hex(8),
    "E2E_AWS_KEYS": "AKIAGATEWAY"
    + secrets.token_hex(4).upper()
    + ":"
    + secrets.token_hex(20),
}
GEMINI_KEY = "AIza-gateway-gemini-" + secrets.token_hex(8)
POLICY = """\
version: 1
tenant: {tenant}
identity:
  header: x-tollgate-identity
providers:
  openai:
    family: openai
    route_prefix: /openai
    credential: {{env: E2E_OPENAI_KEY}}
  anthropic:
    family: anthropic
    route_prefix: /anthropic
    credential: {{file: {anthropic_key_file}}}
  gemini:
    family: gemini
    route_prefix: /gemini
    credential: {{env: E2E_GEMINI_KEY}}
  vertex:
    family: vertex
    route_prefix: /vertex
    credential: {{file: {vertex_key_file}, format: google_service_account}}
  azure:
    family: azure-openai
    route_prefix: /azure
    credential: {{env: E2E_AZURE_KEY}}
  bedrock:
    family: bedrock
    route_prefix: /bedrock
    upstream_host: bedrock-runtime.us-east-1.amazonaws.com
    credential: {{env: E2E_AWS_KEYS}}
  groq:
    family: openai-compatible
    route_prefix: /groq
    pricing_provider: groq
    credential: {{env: E2E_OPENAI_KEY}}
  mistral:
    family: openai-compatible
    route_prefix: /mistral
    pricing_provider: mistral
    rewrite_stream_usage: false
    credential: {{env: E2E_OPENAI_KEY}}
  vllm:
    family: openai-compatible
    route_prefix: /vllm
users:
  default:
    budget: {{capacity_usd: "1000", refill_usd: "1000", refill_every: 1d}}
  nearly-broke:
    budget: {{capacity_usd: "0.000100", refill_usd: "0.000001", refill_every: 1d}}
  burst-user:
    budget: {{capacity_usd: "1000"}}
  tpm-user:
    rate_limits: {{tokens_per_minute: 1000}}
  thrifty:
    budget: {{capacity_usd: "0.001", downgrade_models: {{gpt-4o: gpt-4o-mini}}}}
  thrifty-soft:
    budget:
      capacity_usd: "1"
      downgrade_models: {{gpt-4o: gpt-4o-mini}}
      downgrade_at_percent: 50
directory:
  team-member-1: {{team: shared}}
  team-member-2: {{team: shared}}
  team-member-3: {{team: shared}}
teams:
  shared:
    budget: {{capacity_usd: "1000"}}
pricing:
  default_max_output_tokens: 1024
  models:
    - {{model: zai/GLM-5.2, provider: vllm, input_usd_per_mtok: "0.40", output_usd_per_mtok: "1.20"}}
    - {{model: meta-llama/Llama-3.3-70B-Instruct, provider: vllm, input_usd_per_mtok: "0.20",
       output_usd_per_mtok: "0.60", cache_read_usd_per_mtok: "0.05"}}
"""


@dataclass
class Gateway:
    client: Client
    ledger: Ledger
    standin: StandIn
    envoy: EnvoyProcess
    extproc: ExtprocProcess
    redis: RedisProcess
    openai_key: str
    anthropic_key: str
    policy_path: Path


@contextlib.contextmanager
def running_gateway(
    workdir: Path,
    redis: RedisProcess,
    *,
    tenant: str = TENANT,
    settings: dict[str, str] | None = None,
    policy_extra: str = "",
    env: dict[str, str] | None = None,
    collector: str | None = None,
) -> Iterator[Gateway]:
    """A whole gateway: stand-in provider, ext_proc server, Envoy."""
    workdir.mkdir(parents=True, exist_ok=True)
    openai_key = "sk-gateway-openai-" + secrets.token_hex(12)
    anthropic_key = "sk-ant-gateway-" + secrets.token_hex(12)
    key_file = workdir / "anthropic.key"
    key_file.write_text(anthropic_key + "\n")
    policy_path = workdir / "policy.yaml"
    vertex_key_file = workdir / "vertex-sa.json"
    policy_path.write_text(
        POLICY.format(
            tenant=tenant, anthropic_key_file=key_file, vertex_key_file=vertex_key_file
        )
        + policy_extra
    )
    extproc_settings = {
        "policy_file": str(policy_path),
        "redis_url": redis.url,
        "log_level": "DEBUG",
        "policy_poll_ms": "200",
        **(settings or {}),
    }

    with contextlib.ExitStack() as stack:
        standin = stack.enter_context(StandIn(replay_responder))
        vertex_key_file.write_text(service_account_key(f"{standin.url}/token"))
        extproc = stack.enter_context(
            ExtprocProcess(
                workdir / "extproc",
                env={
                    "E2E_OPENAI_KEY": openai_key,
                    "E2E_GEMINI_KEY": GEMINI_KEY,
                    **PROVIDER_ENV,
                    **(env or {}),
                },
                settings=extproc_settings,
            )
        )
        upstreams = {
            name: ("127.0.0.1", standin.port, False)
            for name in (
                "openai",
                "anthropic",
                "gemini",
                "vertex",
                "azure",
                "bedrock",
                "groq",
                "mistral",
                "vllm",
            )
        }
        config = render_local_config(
            listen_port=free_port(),
            admin_port=free_port(),
            extproc_address=extproc.address,
            upstreams=upstreams,
            access_log_path=str(workdir / "access.log"),
            collector_address=collector,
        )
        with EnvoyProcess(config, workdir / "envoy") as envoy:
            yield Gateway(
                Client(envoy.listen_port),
                Ledger(redis.url, tenant),
                standin,
                envoy,
                extproc,
                redis,
                openai_key,
                anthropic_key,
                policy_path,
            )


@pytest.fixture(scope="session")
def gateway(
    redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """The gateway most end-to-end tests share; tests keep apart by identity."""
    with running_gateway(tmp_path_factory.mktemp("gateway"), redis_server) as gateway:
        yield gateway


@pytest.fixture
def identity() -> str:
    """A fresh identity per test, so budgets never leak between tests."""
    return "user-" + secrets.token_hex(6)


@pytest.fixture
def standin_calls(gateway: Gateway):
    """How many requests reached the stand-in since the test began."""
    before = len(gateway.standin.requests)
    return lambda: len(gateway.standin.requests) - before
