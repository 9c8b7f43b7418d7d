"""Process settings, read once from ``TOLLGATE_*`` environment variables.

The policy (who may spend what, providers, prices) lives in the policy file;
these settings say how this process runs. Each field names its environment
variable and default.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """How one Tollgate process runs. Frozen once read."""

    model_config = SettingsConfigDict(
        env_prefix="TOLLGATE_", frozen=True, extra="ignore"
    )

    policy_file: Path = Field(
        default=Path("policy.yaml"),
        description="TOLLGATE_POLICY_FILE: the policy YAML. Default policy.yaml.",
    )
    redis_url: str | None = Field(
        default=None,
        description=(
            "TOLLGATE_REDIS_URL: the budget store. Default none: `tollgate up` "
            "starts a local redis-server, `tollgate serve` uses "
            "redis://127.0.0.1:6379/0."
        ),
    )
    grpc_listen: str = Field(
        default="127.0.0.1:50051",
        description=(
            "TOLLGATE_GRPC_LISTEN: host:port or unix:/path the ext_proc gRPC "
            "server binds. Default 127.0.0.1:50051."
        ),
    )
    log_level: str = Field(
        default="INFO",
        description="TOLLGATE_LOG_LEVEL: DEBUG, INFO, WARNING. Default INFO.",
    )
    log_format: str = Field(
        default="json", description="TOLLGATE_LOG_FORMAT: json or text. Default json."
    )
    policy_poll_ms: int = Field(
        default=1000,
        gt=0,
        description="TOLLGATE_POLICY_POLL_MS: how often the policy file is checked "
        "for changes. Default 1000.",
    )
    redis_timeout_ms: int = Field(
        default=250,
        gt=0,
        description="TOLLGATE_REDIS_TIMEOUT_MS: socket timeout of one Redis call. "
        "Default 250 (below Envoy's ext_proc message timeout).",
    )
    lease_ms: int = Field(
        default=15 * 60 * 1000,
        gt=0,
        description="TOLLGATE_LEASE_MS: how long a reservation may stay unsettled "
        "before it is charged at its estimate. Default 900000 (15 min).",
    )
    lease_sweep_ms: int = Field(
        default=5000,
        gt=0,
        description="TOLLGATE_LEASE_SWEEP_MS: how often expired leases are "
        "settled. Default 5000.",
    )
    lease_sweep_grace_ms: int = Field(
        default=30_000,
        ge=0,
        description="TOLLGATE_LEASE_SWEEP_GRACE_MS: after start and after Redis "
        "was unreachable, expired leases are charged only once Redis has "
        "answered for this long, so that local journals (this process's and "
        "other replicas') replay the real settlements first. Default 30000.",
    )
    max_body_bytes: int = Field(
        default=32 * 1024 * 1024,
        gt=0,
        description="TOLLGATE_MAX_BODY_BYTES: the largest request or response "
        "body kept for metering. Default 33554432 (32 MiB).",
    )
    grace_period_s: float = Field(
        default=10.0,
        ge=0,
        description="TOLLGATE_GRACE_PERIOD_S: how long a stopping server lets open "
        "calls finish and settle. Default 10.",
    )

    journal_path: Path = Field(
        default=Path("tollgate-journal.jsonl"),
        description="TOLLGATE_JOURNAL_PATH: settlements Redis could not take, "
        "replayed when it answers. Default tollgate-journal.jsonl.",
    )
    journal_max_bytes: int = Field(
        default=64 * 1024 * 1024,
        gt=0,
        description="TOLLGATE_JOURNAL_MAX_BYTES: the journal's bound; past it new "
        "calls are refused. Default 67108864 (64 MiB).",
    )
    journal_replay_ms: int = Field(
        default=1000,
        gt=0,
        description="TOLLGATE_JOURNAL_REPLAY_MS: how often a non-empty journal is "
        "replayed. Default 1000.",
    )

    prometheus_port: int | None = Field(
        default=None,
        gt=0,
        lt=65536,
        description="TOLLGATE_PROMETHEUS_PORT: serve /metrics for scraping on this "
        "port. Default none (OTLP through the OTEL_* variables only).",
    )
    metric_label_cap: int = Field(
        default=1000,
        gt=0,
        description="TOLLGATE_METRIC_LABEL_CAP: distinct values per metric label "
        "(identity, team, tool, model) before further ones read 'other'. "
        "Default 1000.",
    )
    spend_retention_days: int = Field(
        default=400,
        ge=396,
        description="TOLLGATE_SPEND_RETENTION_DAYS: how long daily spend "
        "aggregates are kept (at least 13 months). Default 400.",
    )

    redis_cluster: bool = Field(
        default=False,
        description="TOLLGATE_REDIS_CLUSTER: the Redis URL names one node of a "
        "Redis Cluster. Default false.",
    )
    admin_listen: str | None = Field(
        default=None,
        description="TOLLGATE_ADMIN_LISTEN: host:port of the admin gRPC API "
        "(budgets, keys, spend). Default none: the admin API is off.",
    )
    admin_token_file: Path | None = Field(
        default=None,
        description="TOLLGATE_ADMIN_TOKEN_FILE: the bearer token admin calls must "
        "carry (at least 16 characters). Required with TOLLGATE_ADMIN_LISTEN.",
    )
    key_cache_ttl_ms: int = Field(
        default=5000,
        gt=0,
        description="TOLLGATE_KEY_CACHE_TTL_MS: how long a virtual key lookup is "
        "cached; a revocation takes effect within it. Default 5000.",
    )

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or "redis://127.0.0.1:6379/0"
