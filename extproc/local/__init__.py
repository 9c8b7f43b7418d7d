"""Process tooling for local runs and tests: Envoy, Redis, provider stand-ins.

Shared by ``tollgate up`` and the end-to-end tests. Everything here starts
real processes or sockets on 127.0.0.1 and stops them when its ``with``
block ends.

    envoy_binary, redis_server_binary   find the executables (ConfigError if none)
    free_port                           a loopback port that was free
    render_local_config                 envoy/local.yaml patched for one run
    render_egress_config                envoy/egress.yaml patched for one run
    EnvoyProcess                        run Envoy until /ready says LIVE
    RedisProcess                        a throw-away redis-server, restartable
    StandIn, RecordedRequest, Reply     an HTTP/1.1 server that plays a provider
    demo_responder                      canned OpenAI and Anthropic answers
"""

from extproc.local.binaries import envoy_binary, redis_server_binary
from extproc.local.demo import demo_responder
from extproc.local.envoy import (
    EGRESS_CONFIG_PATH,
    LOCAL_CONFIG_PATH,
    EnvoyProcess,
    render_egress_config,
    render_local_config,
)
from extproc.local.ports import free_port
from extproc.local.redis import RedisProcess
from extproc.local.standin import RecordedRequest, Reply, StandIn

__all__ = [
    "EGRESS_CONFIG_PATH",
    "LOCAL_CONFIG_PATH",
    "EnvoyProcess",
    "RecordedRequest",
    "RedisProcess",
    "Reply",
    "StandIn",
    "demo_responder",
    "envoy_binary",
    "free_port",
    "redis_server_binary",
    "render_egress_config",
    "render_local_config",
]
