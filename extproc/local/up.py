"""``tollgate up``: Redis, the ext_proc server and Envoy on this machine."""

from __future__ import annotations

import contextlib
import secrets
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

from extproc.budgets.clients import redacted_url
from extproc.errors import ConfigError
from extproc.local import _process
from extproc.local.demo import demo_responder
from extproc.local.envoy import EnvoyProcess, render_local_config
from extproc.local.extproc import ExtprocProcess
from extproc.local.ports import free_port
from extproc.local.redis import RedisProcess
from extproc.local.standin import StandIn
from extproc.settings import Settings

DEMO_POLICY = Path(__file__).with_name("demo_policy.yaml")
DEMO_CLUSTERS = ("openai", "anthropic", "gemini")

CURL_EXAMPLE = """\
  curl -s http://127.0.0.1:{port}/openai/v1/chat/completions \\
    -H 'content-type: application/json' \\
    -H 'x-tollgate-identity: alice' \\
    -H 'authorization: Bearer any-client-key-is-stripped' \\
    -d '{{"model":"gpt-4o-mini","max_tokens":64,"messages":[{{"role":"user","content":"Hello"}}]}}'
"""


_CHILD_POLL_S = 0.5


def run_up(*, demo: bool, listen_port: int) -> int:
    """Run everything until Ctrl-C or SIGTERM, then stop it all."""
    settings = Settings()
    policy_file = DEMO_POLICY if demo else _policy_file(settings)
    _require_free(listen_port)
    workdir = Path(tempfile.mkdtemp(prefix="tollgate-up-"))
    # Both set explicitly: a shell that starts a background job ignores
    # SIGINT in it, and Python keeps an ignored signal ignored.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)

    with contextlib.ExitStack() as stack:
        redis = None
        if settings.redis_url is None:
            redis = stack.enter_context(RedisProcess(workdir=workdir / "redis"))
        redis_url = settings.redis_url or redis.url
        upstreams = None
        env: dict[str, str] = {}
        if demo:
            standin = stack.enter_context(StandIn(demo_responder))
            upstreams = {
                name: ("127.0.0.1", standin.port, False) for name in DEMO_CLUSTERS
            }
            env = {
                "TOLLGATE_DEMO_OPENAI_KEY": "demo-openai-" + secrets.token_hex(8),
                "TOLLGATE_DEMO_ANTHROPIC_KEY": "demo-anthropic-" + secrets.token_hex(8),
            }
        extproc = stack.enter_context(
            ExtprocProcess(
                workdir / "extproc",
                env=env,
                settings={
                    "policy_file": str(policy_file),
                    "redis_url": redis_url,
                    "log_format": "text",
                },
            )
        )
        config = render_local_config(
            listen_port=listen_port,
            admin_port=free_port(),
            extproc_address=extproc.address,
            upstreams=upstreams,
        )
        envoy = stack.enter_context(EnvoyProcess(config, workdir / "envoy"))

        _banner(envoy, extproc, redis_url, policy_file, workdir, demo)
        children = {"Envoy": envoy, "the ext_proc server": extproc}
        if redis is not None:
            children["Redis"] = redis
        failed = _wait_for_interrupt(children)

    if failed:
        print(
            f"tollgate: {failed} exited on its own (see its log in {workdir}); "
            "stopped the rest",
            file=sys.stderr,
            flush=True,
        )
        return 1
    print("tollgate: stopped Envoy, the ext_proc server and Redis", flush=True)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _require_free(port: int) -> None:
    """Refuse to start a second gateway on a port that is taken: Envoy binds
    with SO_REUSEPORT and would silently share it with the first."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise ConfigError(
                f"port {port} is in use (is another `tollgate up` running?); "
                "stop it or pass --port"
            ) from exc


def _policy_file(settings: Settings) -> Path:
    path = settings.policy_file
    if not path.exists():
        raise ConfigError(
            f"no policy file at {path}; copy policy.example.yaml to policy.yaml "
            "(or set TOLLGATE_POLICY_FILE), or run `tollgate up --demo`"
        )
    return path.resolve()


def _banner(
    envoy: EnvoyProcess,
    extproc: ExtprocProcess,
    redis_url: str,
    policy: Path,
    workdir: Path,
    demo: bool,
) -> None:
    mode = (
        "demo: providers are played by a local stand-in" if demo else "live providers"
    )
    shown_url = redacted_url(redis_url)
    # A URL with a password came from the environment, where the spend
    # command below finds it too; the banner never prints the password.
    url_setting = f"TOLLGATE_REDIS_URL={redis_url} " if shown_url == redis_url else ""
    print(
        f"tollgate is up ({mode})\n"
        f"  send AI traffic to  http://127.0.0.1:{envoy.listen_port}/openai/v1 "
        f"and http://127.0.0.1:{envoy.listen_port}/anthropic\n"
        f"  ext_proc server     {extproc.address}\n"
        f"  redis               {shown_url}\n"
        f"  policy              {policy}\n"
        f"  logs                {workdir}\n"
        f"try:\n{CURL_EXAMPLE.format(port=envoy.listen_port)}"
        f"then see the spend (kept in this run's Redis, gone when it stops):\n"
        f"  {url_setting}TOLLGATE_POLICY_FILE={policy} "
        f"{_tollgate_command()} spend\n"
        "Ctrl-C stops everything.",
        flush=True,
    )


def _tollgate_command() -> str:
    """How to run tollgate again from any shell: this interpreter's script."""
    script = Path(sys.executable).with_name("tollgate")
    return str(script) if script.exists() else f"{sys.executable} -m extproc"


def _wait_for_interrupt(children: dict[str, _process.Child]) -> str | None:
    """Wait for Ctrl-C or SIGTERM (None), or for a child to exit (its name)."""
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            for name, child in children.items():
                if not child.running:
                    return name
            time.sleep(_CHILD_POLL_S)
    return None


__all__ = ["run_up"]
