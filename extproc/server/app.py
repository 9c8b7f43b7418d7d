"""Running the ext_proc gRPC server: policy, store, service, health, stop."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import signal
from collections.abc import Callable

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from extproc.admin.service import read_token_file, start_admin_server
from extproc.budgets.admin import OverrideBook
from extproc.budgets.clients import open_async_client
from extproc.budgets.journal import Journal, replay_forever
from extproc.budgets.leases import sweep_forever
from extproc.budgets.preflight import check_store
from extproc.budgets.store import BudgetStore
from extproc.credentials import CredentialReader
from extproc.errors import ConfigError
from extproc.keys import KeyRing
from extproc.money import format_money
from extproc.policy import Policy, PolicyWatcher
from extproc.server.runtime import Runtime
from extproc.server.stream import ExternalProcessor
from extproc.settings import Settings
from extproc.telemetry import Telemetry

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
GC_YOUNG_THRESHOLD = 10_000
SERVICE_NAME = "envoy.service.ext_proc.v3.ExternalProcessor"

# Envoy opens long-lived HTTP/2 connections; accept its keepalive pings
# (at most one every 10 s) instead of closing with too_many_pings.
_GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 1),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 0),
]


async def serve(settings: Settings, *, ready: Callable[[], None] | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then stop gracefully and settle."""
    client = await open_async_client(
        settings.effective_redis_url,
        cluster=settings.redis_cluster,
        timeout_ms=settings.redis_timeout_ms,
    )
    credentials = CredentialReader()
    overrides = OverrideBook()

    def compile_policy(policy: Policy) -> Runtime:
        store = BudgetStore(
            client,
            policy.tenant,
            lease_ms=settings.lease_ms,
            spend_retention_s=settings.spend_retention_days * 86_400,
        )
        keys = KeyRing(
            client, policy.tenant, cache_ttl_s=settings.key_cache_ttl_ms / 1000
        )
        return Runtime(policy, credentials, store, keys=keys, overrides=overrides)

    watcher = PolicyWatcher(settings.policy_file, compile_policy)
    await check_store(client, watcher.current.tenant, settings.effective_redis_url)
    journal = Journal(settings.journal_path, max_bytes=settings.journal_max_bytes)
    telemetry = Telemetry.from_environment(
        prometheus_port=settings.prometheus_port,
        max_label_values=settings.metric_label_cap,
    )
    telemetry.set_journal_depth_source(lambda: journal.depth)
    processor = ExternalProcessor(lambda: watcher.current, journal, telemetry)
    server, health = await _start_server(settings, processor)
    tasks = [
        asyncio.create_task(watcher.watch(settings.policy_poll_ms)),
        asyncio.create_task(
            sweep_forever(
                lambda: watcher.current.store,
                settings.lease_sweep_ms,
                grace_ms=settings.lease_sweep_grace_ms,
            )
        ),
        asyncio.create_task(processor.keep_leases(max(settings.lease_ms // 3, 100))),
        asyncio.create_task(
            replay_forever(
                journal, lambda: watcher.current.store, settings.journal_replay_ms
            )
        ),
        asyncio.create_task(
            overrides.refresh_forever(
                client, lambda: watcher.current.tenant, settings.policy_poll_ms
            )
        ),
    ]
    admin = await _start_admin(settings, lambda: watcher.current.policy)
    _tune_garbage_collector()
    log.info("tollgate ext_proc serving", extra={"listen": settings.grpc_listen})
    if ready is not None:
        ready()

    await _wait_for_signal()

    await _stop(server, health, processor, tasks, settings.grace_period_s)
    if admin is not None:
        await admin.stop(settings.grace_period_s)
    telemetry.shutdown()
    journal.close()
    await client.aclose()


def _tune_garbage_collector() -> None:
    """Keep the cyclic collector off the request path as far as is safe.

    Every call allocates many short-lived protobuf and dict objects, so the
    default young-generation threshold (700) runs a collection every few
    calls; in profiles that was about 2% of the server's CPU. What was
    built at start-up (the policy, price tables, modules) is frozen out of
    every later collection.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


async def _start_server(
    settings: Settings, processor: ExternalProcessor
) -> tuple[grpc.aio.Server, HealthServicer]:
    server = grpc.aio.server(options=_GRPC_OPTIONS)
    pb_grpc.add_ExternalProcessorServicer_to_server(processor, server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    server.add_insecure_port(settings.grpc_listen)
    await server.start()
    for service in ("", SERVICE_NAME):
        await health.set(service, health_pb2.HealthCheckResponse.SERVING)
    return server, health


async def _start_admin(
    settings: Settings, policy_of: Callable[[], Policy]
) -> grpc.aio.Server | None:
    """The admin API, when ``TOLLGATE_ADMIN_LISTEN`` asks for it."""
    if settings.admin_listen is None:
        return None
    if settings.admin_token_file is None:
        raise ConfigError("TOLLGATE_ADMIN_LISTEN needs TOLLGATE_ADMIN_TOKEN_FILE")
    server = await start_admin_server(
        listen=settings.admin_listen,
        token=read_token_file(settings.admin_token_file),
        redis_url=settings.effective_redis_url,
        policy_of=policy_of,
        redis_cluster=settings.redis_cluster,
    )
    log.info("tollgate admin API serving", extra={"listen": settings.admin_listen})
    return server


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _stop(
    server: grpc.aio.Server,
    health: HealthServicer,
    processor: ExternalProcessor,
    tasks: list[asyncio.Task[None]],
    grace_s: float,
) -> None:
    log.info("tollgate stopping", extra={"grace_period_s": grace_s})
    await health.enter_graceful_shutdown()
    await server.stop(grace_s)
    await processor.drain(grace_s)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def run(settings: Settings) -> None:
    """Serve in a fresh event loop until stopped by a signal."""
    asyncio.run(serve(settings))
