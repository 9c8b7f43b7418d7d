"""``python -m extproc.drain``: let the pod's Envoy finish its calls, then stop it.

The tollgate container's preStop hook. Envoy exits at once on SIGTERM and
cuts every stream still running, so a rollout or a node drain would cut
long AI answers mid-stream. Instead, before Kubernetes signals anything:

1. ask Envoy (admin API, loopback) to drain its listeners gracefully: it
   asks clients to reconnect elsewhere (``connection: close``, HTTP/2
   GOAWAY) while the calls in flight go on;
2. wait until Envoy has no downstream request in flight, or ``--max-wait-s``;
3. ask Envoy to quit (``/quitquitquit``), which ends its container.

The tollgate container itself stops after this hook, with its own grace
period to settle what the last calls used. Exits 0 in every case: a hook
that fails only makes Kubernetes fall back to signals.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import urllib.error
import urllib.request

ACTIVE_REQUESTS_STAT = "downstream_rq_active"
DEFAULT_ADMIN_URL = "http://127.0.0.1:9901"
POLL_INTERVAL_S = 1.0


def drain(admin_url: str, *, max_wait_s: float, stat_prefix: str = "tollgate") -> str:
    """Drain Envoy at ``admin_url``, wait for its calls, stop it; what happened."""
    _post(admin_url, "/drain_listeners?graceful")

    deadline = time.monotonic() + max_wait_s
    active = _active_requests(admin_url, stat_prefix)
    while active and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL_S)
        active = _active_requests(admin_url, stat_prefix)

    _post(admin_url, "/quitquitquit")
    if active:
        return f"stopped Envoy with {active} call(s) still in flight after {max_wait_s:g} s"
    return "stopped Envoy with no call in flight"


def _active_requests(admin_url: str, stat_prefix: str) -> int:
    """Downstream requests in flight on the listener ``stat_prefix``; 0 when
    Envoy no longer answers (nothing left to wait for)."""
    name = f"http.{stat_prefix}.{ACTIVE_REQUESTS_STAT}"
    try:
        with urllib.request.urlopen(
            f"{admin_url}/stats?filter=^{re.escape(name)}$", timeout=2
        ) as reply:
            text = reply.read().decode()
    except (urllib.error.URLError, OSError):
        return 0
    match = re.search(rf"^{re.escape(name)}: (\d+)$", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def _post(admin_url: str, path: str) -> None:
    request = urllib.request.Request(admin_url + path, method="POST", data=b"")
    try:
        urllib.request.urlopen(request, timeout=2).close()
    except (urllib.error.URLError, OSError):
        pass  # Envoy already gone: nothing to drain or stop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m extproc.drain", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    parser.add_argument(
        "--max-wait-s",
        type=float,
        default=300.0,
        help="longest wait for calls in flight (default 300)",
    )
    parser.add_argument("--stat-prefix", default="tollgate")
    args = parser.parse_args(argv)

    outcome = drain(
        args.admin_url, max_wait_s=args.max_wait_s, stat_prefix=args.stat_prefix
    )
    print(f"tollgate drain: {outcome}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
