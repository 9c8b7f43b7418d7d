"""The egress gateway as deployed, run on this machine.

``envoy/egress.yaml`` as committed, with only what cannot exist here moved:
ports on 127.0.0.1, the provider endpoints on local TLS servers that present
certificates for the providers' real names from a test CA (trusted instead
of the system bundle), and the JWKS file of a test token issuer. The ext_proc
server listens on a Unix socket, as in the pod.
"""

from __future__ import annotations

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
    render_egress_config,
)
from extproc.local.extproc import ExtprocProcess
from tests.deploy.pki import TestCA, TokenSigner
from tests.e2e.harness import Client, Ledger, replay_responder

TENANT = "deploy"
OPENAI_HOST = "api.openai.com"
ANTHROPIC_HOST = "api.anthropic.com"
AZURE_HOST = "example-resource.openai.azure.com"
GEMINI_HOST = "generativelanguage.googleapis.com"

POLICY = """\
version: 1
tenant: {tenant}
identity:
  header: x-tollgate-identity
providers:
  openai:
    family: openai
    route_prefix: /openai
    hosts: [{openai_host}]
    credential: {{env: DEPLOY_OPENAI_KEY}}
  anthropic:
    family: anthropic
    route_prefix: /anthropic
    hosts: [{anthropic_host}]
    credential: {{file: {anthropic_key_file}}}
  azure-openai:
    family: azure-openai
    route_prefix: /azure-openai
    hosts: [{azure_host}]
    credential: {{env: DEPLOY_AZURE_KEY}}
  gemini:
    family: gemini
    route_prefix: /gemini
    hosts: [{gemini_host}]
    credential: {{env: DEPLOY_GEMINI_KEY}}
users:
  default:
    budget: {{capacity_usd: "1000", refill_usd: "1000", refill_every: 1d}}
pricing:
  default_max_output_tokens: 1024
"""


@dataclass
class EgressGateway:
    client: Client
    ledger: Ledger
    envoy: EnvoyProcess
    extproc: ExtprocProcess
    signer: TokenSigner
    openai: StandIn
    anthropic: StandIn
    impostor: StandIn  # a valid certificate, for the wrong name
    stranger: StandIn  # the right name, from a CA nobody trusts
    openai_key: str
    anthropic_key: str
    workdir: Path

    def token(self, subject: str, **kwargs: object) -> str:
        return self.signer.token(subject, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def egress_gateway(
    redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EgressGateway]:
    workdir = tmp_path_factory.mktemp("egress")
    ca = TestCA(workdir)
    other_ca_dir = workdir / "other-ca"
    other_ca_dir.mkdir()
    other_ca = TestCA(other_ca_dir, name="Nobody trusts this CA")
    signer = TokenSigner(workdir)
    openai_key = "sk-egress-openai-" + secrets.token_hex(12)
    anthropic_key = "sk-ant-egress-" + secrets.token_hex(12)
    key_file = workdir / "anthropic.key"
    key_file.write_text(anthropic_key + "\n")
    policy_path = workdir / "policy.yaml"
    policy_path.write_text(
        POLICY.format(
            tenant=TENANT,
            anthropic_key_file=key_file,
            openai_host=OPENAI_HOST,
            anthropic_host=ANTHROPIC_HOST,
            azure_host=AZURE_HOST,
            gemini_host=GEMINI_HOST,
        )
    )
    socket_path = workdir / "run" / "extproc.sock"
    socket_path.parent.mkdir()

    def tls(cert_ca: TestCA, name: str) -> StandIn:
        return StandIn(
            replay_responder, ssl_context=cert_ca.issue(name).server_context()
        )

    with (
        tls(ca, OPENAI_HOST) as openai,
        tls(ca, ANTHROPIC_HOST) as anthropic,
        tls(ca, OPENAI_HOST) as impostor,
        tls(other_ca, GEMINI_HOST) as stranger,
        ExtprocProcess(
            workdir / "extproc",
            listen=f"unix:{socket_path}",
            env={
                "DEPLOY_OPENAI_KEY": openai_key,
                "DEPLOY_AZURE_KEY": "azure-" + secrets.token_hex(8),
                "DEPLOY_GEMINI_KEY": "gemini-" + secrets.token_hex(8),
            },
            settings={
                "policy_file": str(policy_path),
                "redis_url": redis_server.url,
                "log_level": "DEBUG",
            },
        ) as extproc,
    ):
        config = render_egress_config(
            listen_port=free_port(),
            health_port=free_port(),
            admin_port=free_port(),
            extproc_address=extproc.address,
            upstreams={
                "openai": ("127.0.0.1", openai.port),
                "anthropic": ("127.0.0.1", anthropic.port),
                "azure-openai": ("127.0.0.1", impostor.port),
                "gemini": ("127.0.0.1", stranger.port),
            },
            trusted_ca_path=str(ca.cert_path),
            jwks_path=str(signer.jwks_path),
            access_log_path=str(workdir / "access.log"),
        )
        with EnvoyProcess(config, workdir / "envoy") as envoy:
            yield EgressGateway(
                Client(envoy.listen_port),
                Ledger(redis_server.url, TENANT),
                envoy,
                extproc,
                signer,
                openai,
                anthropic,
                impostor,
                stranger,
                openai_key,
                anthropic_key,
                workdir,
            )
