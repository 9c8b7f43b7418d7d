"""The command line of ``bench/run``: start everything, measure, report.

Progress goes to stderr; the report goes to stdout and ends with

    full/noop throughput ratio: R, added p99 ms: P

where R is full over no-op requests per second for plain JSON at 16
connections and P is full's p99 minus the floor's p99 for plain JSON at half
of full's highest measured throughput.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import redis

from extproc.errors import ConfigError
from extproc.local import envoy_binary, redis_server_binary
from tollbench import load, otlp_sink, payloads, probes, profiling, report, topology
from tollbench.children import BENCH_DIR, CpuAccount, cpu_seconds, rss_bytes
from tollbench.client import Connection, percentile
from tollbench.report import JSON, STREAM, FirstByte, Row
from tollbench.topology import FLOOR, FULL, NOOP, SETUPS, SPLIT, Gateway, Topology

TARGET_C = report.TARGET_CONNECTIONS
PACED_CONNECTIONS = 64
"""Connections of a paced run: with many, each pausing long, arrivals come
close to an open (Poisson) stream and the rate barely depends on latency."""
REQUEST_ID = "x-tollgate-request-id"
MODE_TITLES = {
    JSON: "Plain JSON: POST {path}, the answer in one body ({size} bytes)",
    STREAM: "SSE stream: POST {path} with stream=true, {events} events per answer, "
    "each sent {delay:g} ms after the one before (so a stream lasts at least "
    "{duration:g} ms and the floor is bound by that)",
}


@dataclass(frozen=True)
class Plan:
    """How long and how wide each part of a run is."""

    name: str
    concurrencies: tuple[int, ...]
    run_s: float
    warmup_s: float
    half_load_s: float
    first_byte_samples: int
    monitor_calls: tuple[int, int]
    profile_s: float


QUICK = Plan("quick", (1, 16), 3, 1, 4, 200, (60, 30), 8)
FULL_PLAN = Plan("full", (1, 4, 16, 64), 10, 3, 15, 1000, (200, 100), 20)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run",
        description="Floor, no-op ext_proc and Tollgate under load, side by side.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="concurrency 1 and 16, 3 s runs: under two minutes",
    )
    parser.add_argument(
        "--concurrency",
        type=_int_list,
        default=None,
        help="comma-separated connection counts (default 1,4,16,64)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds per load run (default 10, quick 3)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also run py-spy against Tollgate during a full-policy "
        "JSON run at 16 connections and print the top entries",
    )
    parser.add_argument("--profile-seconds", type=float, default=None)
    parser.add_argument(
        "--profile-native",
        action="store_true",
        help="py-spy --native: C and Cython frames too, but py-spy "
        "then pauses the process per sample and slows it down",
    )
    parser.add_argument(
        "--soak",
        type=float,
        metavar="SECONDS",
        default=None,
        help="only: run full policy at half load for SECONDS and "
        "report the ext_proc process's memory at start and end",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="Tollgate server processes behind the full setup's Envoy "
        "(default 1); ext_proc CPU is their sum",
    )
    parser.add_argument(
        "--hotpath",
        type=int,
        metavar="CALLS",
        default=None,
        help="only: feed CALLS JSON calls straight into Tollgate's stream "
        "handler (no Envoy, no gRPC) and report its own CPU per call",
    )
    parser.add_argument(
        "--split",
        action="store_true",
        help="also run the no-op as two filters: a gate for the request and a "
        "metering filter in observability mode for the response",
    )
    parser.add_argument(
        "--event-delay-ms",
        type=float,
        default=1.0,
        help="pause before each SSE event of the stand-in (default 1; "
        "at 0 Envoy reads a whole stream as one chunk)",
    )
    parser.add_argument(
        "--envoy-concurrency",
        type=int,
        default=1,
        help="Envoy worker threads per gateway (default 1)",
    )
    parser.add_argument(
        "--telemetry",
        choices=("on", "off"),
        default="on",
        help="Tollgate exports OTLP traces and metrics to a stand-in "
        "collector (on, the default) or runs with the SDK disabled",
    )
    parser.add_argument(
        "--tollgate-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra TOLLGATE_NAME setting for the Tollgate process",
    )
    parser.add_argument(
        "--policy",
        type=Path,
        default=None,
        help="a policy file for Tollgate instead of the benchmark's "
        "own (it must route /openai and never refuse)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep configs and logs here (default: a temp dir, removed)",
    )
    parser.add_argument(
        "--no-install",
        action="store_true",
        help="fail instead of installing wrk or py-spy",
    )

    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    plan = _plan(args)
    started = time.monotonic()
    try:
        wrk = load.ensure_wrk(install=not args.no_install)
        py_spy = (
            profiling.ensure_py_spy(install=not args.no_install)
            if args.profile
            else None
        )
        envoy_binary()
        redis_server_binary()
    except (load.WrkMissing, profiling.PySpyMissing, ConfigError) as error:
        print(f"bench/run: {error}", file=sys.stderr)
        return 2

    settings = _tollgate_settings(args.tollgate_env)
    telemetry = args.telemetry == "on"
    if args.hotpath:
        return _hotpath(args.hotpath, telemetry=telemetry, workdir=args.workdir)
    with _workdir(args.workdir) as workdir:
        setups = (FULL,) if args.soak else SETUPS
        if args.split and not args.soak:
            setups = (FLOOR, NOOP, SPLIT, FULL)
        progress(f"starting providers and gateways ({', '.join(setups)}) in {workdir}")
        with topology.started(
            workdir,
            setups,
            envoy_concurrency=args.envoy_concurrency,
            event_delay_ms=args.event_delay_ms,
            tollgate_settings=settings,
            telemetry=telemetry,
            policy=args.policy.read_text() if args.policy else None,
            processes=args.processes,
        ) as topo:
            bench = Bench(topo, plan, wrk, workdir, args)
            if args.soak:
                lines = bench.soak(args.soak)
            else:
                lines = bench.everything(py_spy)
            note = f"telemetry: {_telemetry_note(topo, telemetry)}"
            _insert_after(lines, "commit:", note)

    # The last line stays the machine-readable one.
    summary = lines.pop()
    lines += [f"(wall time {time.monotonic() - started:.0f} s)", summary]
    print("\n".join(lines), flush=True)

    return 0


def _hotpath(calls: int, *, telemetry: bool, workdir: Path | None) -> int:
    from tollbench import hotpath  # imports the server only when asked

    progress(f"hot path: {calls} JSON calls, {hotpath.CONCURRENCY} at a time")
    result = hotpath.run(calls, telemetry=telemetry, workdir=workdir)
    print(
        f"hot path: {result.calls} calls in {result.wall_s:.2f} s, "
        f"Tollgate CPU {result.cpu_us_per_call:,.0f} us per call "
        f"(telemetry {'on' if result.telemetry else 'off'}; gRPC not included)",
        flush=True,
    )

    return 0


def _plan(args: argparse.Namespace) -> Plan:
    plan = QUICK if args.quick else FULL_PLAN
    if args.concurrency:
        plan = replace(plan, concurrencies=tuple(args.concurrency))
    if TARGET_C not in plan.concurrencies:
        plan = replace(
            plan, concurrencies=tuple(sorted({*plan.concurrencies, TARGET_C}))
        )
    if args.duration:
        plan = replace(plan, run_s=args.duration)
    if args.profile_seconds:
        plan = replace(plan, profile_s=args.profile_seconds)

    return plan


class Bench:
    """One benchmark over a started topology."""

    def __init__(
        self,
        topo: Topology,
        plan: Plan,
        wrk: str,
        workdir: Path,
        args: argparse.Namespace,
    ) -> None:
        self.topo = topo
        self.plan = plan
        self.wrk = wrk
        self.workdir = workdir
        self.args = args
        self.wrk_log = workdir / "wrk.log"
        self.pids = topo.pids()
        self.scripts = {
            JSON: load.write_script(workdir / "json.lua", stream=False),
            STREAM: load.write_script(workdir / "sse.lua", stream=True),
        }

    # The whole run.

    def everything(self, py_spy: str | None) -> list[str]:
        capacity = self.provider_capacity()
        self.warm_up()
        account = CpuAccount(self.pids)
        rows = self.matrix()
        half_rows, half_target = self.half_load(rows)
        first_bytes = self.first_bytes()
        sample = self.monitor()
        machine = account.finish()
        ledger = self.ledger_entry()
        profiles = self.profile(py_spy) if py_spy else None

        lines = self.render(
            capacity,
            rows,
            half_rows,
            half_target,
            first_bytes,
            sample,
            ledger,
            profiles,
        )
        other_cores, steal, seconds = machine
        _insert_after(
            lines,
            "commit:",
            f"machine while measuring ({seconds:.0f} s): other processes used "
            f"{other_cores:.2f} cores on average, hypervisor steal {steal:.1%} of all "
            "CPU (column 'busy elsewhere' gives it per run)",
        )

        return lines

    def provider_capacity(self) -> dict[str, load.LoadResult]:
        """The stand-ins alone, so the floor can be judged against them."""
        progress("measuring the provider stand-ins alone (16 connections)")
        ports = {
            JSON: self.topo.provider.listen_port,
            STREAM: self.topo.sse_provider.port,
        }
        duration = max(2.0, self.plan.run_s / 2)
        return {
            mode: load.run(
                self.wrk,
                port,
                self.scripts[mode],
                connections=TARGET_C,
                duration_s=duration,
                log_path=self.wrk_log,
            )
            for mode, port in ports.items()
        }

    def warm_up(self) -> None:
        progress(
            f"warming up every gateway ({self.plan.warmup_s:g} s per kind of call)"
        )
        for gateway in self.topo.gateways.values():
            for mode in (JSON, STREAM):
                result = load.run(
                    self.wrk,
                    gateway.port,
                    self.scripts[mode],
                    connections=TARGET_C,
                    duration_s=self.plan.warmup_s,
                    log_path=self.wrk_log,
                )
                if result.errors:
                    raise RuntimeError(
                        f"{gateway.name} answered {result.errors} of "
                        f"{result.requests} {mode} warm-up calls with errors; "
                        f"see {self.workdir}"
                    )

    def matrix(self) -> list[Row]:
        rows: list[Row] = []
        for mode in (JSON, STREAM):
            for connections in self.plan.concurrencies:
                for name, gateway in self.topo.gateways.items():
                    progress(
                        f"{mode:4} {name:5} {connections:3} connections, "
                        f"{self.plan.run_s:g} s"
                    )
                    rows.append(self.measure(gateway, mode, connections))

        return rows

    def measure(
        self,
        gateway: Gateway,
        mode: str,
        connections: int,
        *,
        duration_s: float | None = None,
        script: Path | None = None,
    ) -> Row:
        before = probes.snapshot(gateway)
        account = CpuAccount(self.pids)
        result = load.run(
            self.wrk,
            gateway.port,
            script or self.scripts[mode],
            connections=connections,
            duration_s=duration_s or self.plan.run_s,
            log_path=self.wrk_log,
        )
        other_cores, steal, _ = account.finish()
        time.sleep(0.3)  # let the last settlements land before counting
        after = probes.snapshot(gateway)

        return Row(
            mode,
            gateway.name,
            connections,
            result,
            probes.delta(before, after, result.requests),
            other_cores,
            steal,
        )

    def half_load(self, rows: list[Row]) -> tuple[list[Row], float]:
        """Every setup at half of full's best JSON rate, paced."""
        best = max(r.load.rps for r in rows if r.mode == JSON and r.setup == FULL)
        target = best / 2
        lowest = min(self.plan.concurrencies)
        half_rows = []
        for name, gateway in self.topo.gateways.items():
            unloaded = report.find(rows, JSON, name, lowest)
            latency_ms = unloaded.load.p50_ms if unloaded else 0.0
            pause_ms = max(0.0, 1000 * PACED_CONNECTIONS / target - latency_ms)
            script = load.write_script(
                self.workdir / f"json-paced-{name}.lua",
                stream=False,
                pause_mean_ms=pause_ms,
            )
            progress(
                f"json {name:5} paced at {target:,.0f} req/s "
                f"({PACED_CONNECTIONS} connections), {self.plan.half_load_s:g} s"
            )
            half_rows.append(
                self.measure(
                    gateway,
                    JSON,
                    PACED_CONNECTIONS,
                    duration_s=self.plan.half_load_s,
                    script=script,
                )
            )

        return half_rows, target

    def first_bytes(self) -> list[FirstByte]:
        """Time to the first body byte of a stream, one call at a time."""
        results = []
        for name, gateway in self.topo.gateways.items():
            progress(
                f"sse  {name:5} time to first byte, "
                f"{self.plan.first_byte_samples} sequential calls"
            )
            results.append(self._first_byte(gateway))

        return results

    def _first_byte(self, gateway: Gateway) -> FirstByte:
        body = payloads.request_body(stream=True)
        times: list[float] = []
        failures = 0
        with Connection(gateway.port) as connection:
            for index in range(self.plan.first_byte_samples + 20):
                identity = payloads.IDENTITIES[index % len(payloads.IDENTITIES)]
                exchange = connection.post(
                    payloads.PATH, payloads.request_headers(identity, stream=True), body
                )
                unmarked = gateway.name == FULL and REQUEST_ID not in exchange.headers
                if exchange.status != 200 or b"[DONE]" not in exchange.body or unmarked:
                    failures += 1
                elif index >= 20:  # the first 20 warm the connection up
                    times.append(exchange.first_byte_s * 1000)

        return FirstByte(
            gateway.name,
            len(times),
            percentile(times, 0.5) if times else 0.0,
            percentile(times, 0.99) if times else 0.0,
            failures,
        )

    def monitor(self) -> probes.MonitorSample | None:
        full = self.topo.gateways.get(FULL)
        if full is None or full.redis is None:
            return None
        json_calls, stream_calls = self.plan.monitor_calls
        progress(
            f"full  Redis MONITOR over {json_calls} JSON and {stream_calls} stream calls"
        )

        def send() -> None:
            with Connection(full.port) as connection:
                for index in range(json_calls + stream_calls):
                    stream = index >= json_calls
                    identity = payloads.IDENTITIES[index % len(payloads.IDENTITIES)]
                    connection.post(
                        payloads.PATH,
                        payloads.request_headers(identity, stream=stream),
                        payloads.request_body(stream=stream),
                    )

        return probes.monitor_sample(full.redis.port, send, json_calls + stream_calls)

    def ledger_entry(self) -> dict[str, str] | None:
        """The newest ledger entry: proof that full metered and settled."""
        full = self.topo.gateways.get(FULL)
        if full is None or full.redis is None:
            return None
        client = redis.Redis.from_url(full.redis.url, decode_responses=True)
        try:
            entries = client.xrevrange(f"tg:{{{topology.TENANT}}}:ledger", count=1)
            length = client.xlen(f"tg:{{{topology.TENANT}}}:ledger")
        finally:
            client.close()
        if not entries:
            return {"entries": "0"}
        _, fields = entries[0]
        entry = {k: v for k, v in fields.items() if k != "detail"}
        with contextlib.suppress(ValueError, TypeError):
            detail = json.loads(fields.get("detail", "{}"))
            entry["usage"] = json.dumps(detail.get("usage"))
            entry["price_source"] = str(detail.get("price_source"))
        entry["entries"] = str(length)

        return entry

    def profile(self, py_spy: str) -> dict[str, tuple[profiling.Profile, Row]]:
        """py-spy on the no-op and on Tollgate, each during a JSON run at 16
        connections: the no-op shows what the protocol and grpc.aio cost
        alone, so the difference is Tollgate's own."""
        profiles = {}
        for name in (NOOP, FULL):
            gateway = self.topo.gateways.get(name)
            if gateway is None or gateway.extproc_pid is None:
                continue
            out = self.workdir / f"profile-{name}.txt"
            progress(
                f"json {name:5} 16 connections under py-spy, {self.plan.profile_s:g} s"
            )
            spy = profiling.start(
                py_spy,
                gateway.extproc_pid,
                self.plan.profile_s + 1,
                out,
                native=self.args.profile_native,
            )
            time.sleep(0.5)
            row = self.measure(gateway, JSON, TARGET_C, duration_s=self.plan.profile_s)
            spy.wait(timeout=60)
            if not out.exists():
                raise RuntimeError(
                    f"py-spy wrote no profile; see {out.with_suffix('.log')}"
                )
            profiles[name] = (profiling.read(out), row)

        return profiles

    # Memory over time.

    def soak(self, seconds: float) -> list[str]:
        full = self.topo.gateways[FULL]
        assert full.extproc_pid is not None
        progress("soak: measuring full's best JSON rate at 16 connections (5 s)")
        self.warm_up()
        best = self.measure(full, JSON, TARGET_C, duration_s=5)
        unloaded = self.measure(full, JSON, 1, duration_s=3)
        target = best.load.rps / 2
        pause_ms = max(0.0, 1000 * PACED_CONNECTIONS / target - unloaded.load.p50_ms)
        script = load.write_script(
            self.workdir / "json-soak.lua", stream=False, pause_mean_ms=pause_ms
        )
        progress(f"soak: {seconds:g} s paced at {target:,.0f} req/s; RSS every 10 s")

        rss_before = rss_bytes(full.extproc_pid)
        holder: dict[str, Row] = {}
        runner = threading.Thread(
            target=lambda: holder.update(
                row=self.measure(
                    full, JSON, PACED_CONNECTIONS, duration_s=seconds, script=script
                )
            ),
            daemon=True,
        )
        runner.start()
        samples, rss_after = self._sample_rss(full.extproc_pid, runner, seconds)
        runner.join()

        return _soak_lines(
            samples,
            rss_after,
            rss_before,
            holder.get("row"),
            target,
            seconds,
            best.load.rps,
        )

    def _sample_rss(
        self, pid: int, runner: threading.Thread, seconds: float
    ) -> tuple[list[tuple[float, int]], int]:
        """RSS every 10 s while ``runner`` loads; and once after it stopped."""
        samples: list[tuple[float, int]] = []
        begun = time.monotonic()
        while runner.is_alive():
            samples.append((time.monotonic() - begun, rss_bytes(pid)))
            runner.join(timeout=10)

        return samples, rss_bytes(pid)

    # The report.

    def render(
        self,
        capacity: dict[str, load.LoadResult],
        rows: list[Row],
        half_rows: list[Row],
        half_target: float,
        first_bytes: list[FirstByte],
        sample: probes.MonitorSample | None,
        ledger: dict[str, str] | None,
        profiles: dict[str, tuple[profiling.Profile, Row]] | None,
    ) -> list[str]:
        lines = [
            f"Tollgate gateway benchmark ({self.plan.name})",
            *machine_lines(self.args),
        ]
        lines.append(
            "providers: JSON = an Envoy direct_response (alone: "
            f"{capacity[JSON].rps:,.0f} req/s at 16 connections); streams = "
            f"bench/tollbench/sse_provider.py, asyncio (alone: {capacity[STREAM].rps:,.0f} "
            "streams/s at 16 connections)"
        )
        lines.append(
            f"load: wrk, 1 thread, closed loop, {self.plan.run_s:g} s per run; "
            "msgs/req = messages Envoy sent the ext_proc server per request; "
            "redis cmd/req counts commands run inside Lua scripts too; "
            "CPU = /proc utime+stime"
        )
        if SPLIT in self.topo.gateways:
            lines.append(
                "split: the no-op server behind two ext_proc filters, a gate "
                "(request headers and body, waited for) and a metering filter in "
                "observability mode (response headers and body, not waited for)"
            )
        path, size = payloads.PATH, len(payloads.completion_body())
        events = len(payloads.stream_events())
        for mode in (JSON, STREAM):
            delay = self.args.event_delay_ms
            title = MODE_TITLES[mode].format(
                path=path,
                size=size,
                events=events,
                delay=delay,
                duration=events * delay,
            )
            lines += [
                "",
                *report.load_table([r for r in rows if r.mode == mode], title),
            ]

        best_full = max(r.load.rps for r in rows if r.mode == JSON and r.setup == FULL)
        lines += [
            "",
            *report.half_load_table(
                half_rows,
                f"Half load, plain JSON: half of full's best {best_full:,.0f} req/s = "
                f"{half_target:,.0f} req/s target, {PACED_CONNECTIONS} paced connections",
            ),
        ]
        lines += [
            "",
            *report.first_byte_table(
                first_bytes,
                "Stream time to first body byte: one call at a time, no other load "
                "(added = minus the floor)",
            ),
        ]
        if sample is not None:
            json_calls, stream_calls = self.plan.monitor_calls
            lines += [
                "",
                *report.monitor_lines(
                    sample, f"{json_calls} JSON and {stream_calls} stream calls"
                ),
            ]
        if ledger is not None:
            shown = ", ".join(f"{k}={v}" for k, v in ledger.items())
            lines += [f"ledger: newest entry {shown}"]
        if profiles:
            mode = "native, blocking" if self.args.profile_native else "non-blocking"
            title = (
                f"Profiles (py-spy, 200 Hz, {mode}), JSON at 16 connections; "
                "us/req = share of samples x the process's CPU per request"
            )
            lines += [
                "",
                title,
                *report.profile_comparison(profiles),
            ]
            if FULL in profiles:
                prof, _ = profiles[FULL]
                lines += ["", *report.profile_lines(prof, 20, "tollgate serve")]
            if NOOP in profiles:
                prof, _ = profiles[NOOP]
                lines += ["", *report.profile_lines(prof, 8, "no-op ext_proc")]

        lines += ["", *self.targets(rows, half_rows, first_bytes, sample)]

        return lines

    def targets(
        self,
        rows: list[Row],
        half_rows: list[Row],
        first_bytes: list[FirstByte],
        sample: probes.MonitorSample | None,
    ) -> list[str]:
        full = report.find(rows, JSON, FULL, TARGET_C)
        noop = report.find(rows, JSON, NOOP, TARGET_C)
        ratio = (
            full.load.rps / noop.load.rps if full and noop and noop.load.rps else 0.0
        )
        half = {r.setup: r for r in half_rows}
        added_p99 = half[FULL].load.p99_ms - half[FLOOR].load.p99_ms
        by_setup = {f.setup: f for f in first_bytes}
        added_ttfb = by_setup[FULL].p50_ms - by_setup[FLOOR].p50_ms
        # What the protocol alone adds, beside each latency: a target the
        # no-op itself misses cannot be met by any work done per message.
        noop_p99 = half[NOOP].load.p99_ms - half[FLOOR].load.p99_ms
        noop_ttfb = by_setup[NOOP].p50_ms - by_setup[FLOOR].p50_ms
        trips = sample.round_trips_per_request if sample else None

        round_trips_met = None if trips is None else trips <= report.TARGET_ROUND_TRIPS
        ratio_label = (
            f"full >= {report.TARGET_RATIO:.0%} of no-op throughput, JSON, "
            f"{TARGET_C} connections"
        )
        p99_label = (
            "added p99 over the floor at half of full's max < "
            f"{report.TARGET_ADDED_P99_MS:g} ms"
        )
        trips_label = f"Redis round trips per request <= {report.TARGET_ROUND_TRIPS}"
        ttfb_label = (
            "added stream time to first byte, p50 < "
            f"{report.TARGET_ADDED_TTFB_P50_MS:g} ms"
        )
        checks = [
            (ratio_label, f"{ratio:.2f}", ratio >= report.TARGET_RATIO),
            (
                p99_label,
                f"{added_p99:.2f} ms (no-op alone {noop_p99:.2f} ms)",
                added_p99 < report.TARGET_ADDED_P99_MS,
            ),
            (trips_label, _fmt(trips, 2), round_trips_met),
            (
                ttfb_label,
                f"{added_ttfb:.3f} ms (no-op alone {noop_ttfb:.3f} ms)",
                added_ttfb < report.TARGET_ADDED_TTFB_P50_MS,
            ),
        ]
        lines = ["Targets"]
        lines += [
            f"  {label}: {value} -> {report.verdict(met)}"
            for label, value, met in checks
        ]
        lines.append(
            "  ext_proc memory flat within 10% over 10 min at half load: "
            "not part of this run (bench/run --soak 600)"
        )
        lines.append(
            f"full/noop throughput ratio: {ratio:.2f}, added p99 ms: {added_p99:.2f}"
        )

        return lines


def _soak_lines(
    samples: list[tuple[float, int]],
    rss_after: int,
    rss_before: int,
    row: Row | None,
    target: float,
    seconds: float,
    best: float,
) -> list[str]:
    mib = 1024 * 1024
    warm_s = min(60.0, seconds / 10)
    warm = next((s for s in samples if s[0] >= warm_s), samples[0])
    end = samples[-1]
    growth = (end[1] - warm[1]) / warm[1]
    trend = _slope([s for s in samples if s[0] >= warm[0]]) * 600 / mib
    title = (
        f"Soak: full policy, plain JSON, {seconds:g} s paced at {target:,.0f} req/s "
        f"(half of {best:,.0f})"
    )
    lines = [title, *machine_lines(None)]
    if row is not None:
        lines.append(
            f"  achieved {row.load.rps:,.0f} req/s, p50 {row.load.p50_ms:.2f} ms, "
            f"p99 {row.load.p99_ms:.2f} ms, errors {row.load.errors}, "
            f"ext_proc CPU {_fmt(row.delta.extproc_cpu_us_per_request)} us/req"
        )
    step = max(1, len(samples) // 12)
    shown = samples[::step]
    if shown[-1] is not samples[-1]:
        shown.append(samples[-1])
    lines.append("  ext_proc RSS under load (s: MiB):")
    lines.append("    " + ", ".join(f"{t:.0f}: {rss / mib:.1f}" for t, rss in shown))
    lines.append(
        f"  RSS before load {rss_before / mib:.1f} MiB; at {warm[0]:.0f} s (after "
        f"warm-in) {warm[1] / mib:.1f} MiB; last under load ({end[0]:.0f} s) "
        f"{end[1] / mib:.1f} MiB; after the load stopped {rss_after / mib:.1f} MiB; "
        f"max {max(s[1] for s in samples) / mib:.1f} MiB"
    )
    lines.append(f"  least-squares trend after warm-in: {trend:+.2f} MiB per 10 min")
    lines.append(
        f"  growth after warm-in: {growth:+.1%} -> "
        f"{report.verdict(abs(growth) <= report.TARGET_RSS_GROWTH)} "
        f"(target within {report.TARGET_RSS_GROWTH:.0%})"
    )
    lines.append(
        f"soak rss start MiB: {warm[1] / mib:.1f}, end MiB: {end[1] / mib:.1f}, "
        f"growth: {growth:+.3f}"
    )

    return lines


def _slope(points: list[tuple[float, int]]) -> float:
    """Least-squares bytes per second through ``points``; 0 with fewer than 2."""
    if len(points) < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / len(points)
    mean_v = sum(v for _, v in points) / len(points)
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if not spread:
        return 0.0

    return sum((t - mean_t) * (v - mean_v) for t, v in points) / spread


def machine_lines(args: argparse.Namespace | None) -> list[str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    cores = len(os.sched_getaffinity(0))
    workers = args.envoy_concurrency if args else 1
    processes = args.processes if args else 1

    machine = (
        f"machine: {cores} cores (nproc), CPU {cpu}, Linux {platform.release()}, "
        f"load average {os.getloadavg()[0]:.2f} at the end"
    )
    software = (
        f"software: Python {platform.python_version()}, {_envoy_version()}, "
        f"{workers} Envoy worker(s) per gateway, {processes} Tollgate "
        f"process(es); {_redis_version()}; {_wrk_version()}"
    )

    return [machine, software, f"commit: {_commit()}"]


def _envoy_version() -> str:
    # "envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    text = _output([str(envoy_binary()), "--version"])
    _, found, rest = text.partition("version:")
    return "Envoy " + (rest.split("/")[1] if found and "/" in rest else "?")


def _redis_version() -> str:
    # "Redis server v=7.0.15 sha=..."
    text = _output([str(redis_server_binary()), "--version"])
    _, found, rest = text.partition("v=")
    return "Redis " + (rest.split()[0] if found else "?")


def _wrk_version() -> str:
    # "wrk debian/4.1.0-3+b2 [epoll] Copyright ..."
    words = _output(["wrk", "-v"]).split()
    return "wrk " + (words[1] if len(words) > 1 else "?")


def _commit() -> str:
    root = BENCH_DIR.parent
    git = ["git", "-C", str(root)]
    try:
        head = _output([*git, "rev-parse", "--short", "HEAD"])
        dirty = _output([*git, "status", "--porcelain", "--", "extproc", "envoy"])
    except OSError:
        return "unknown"

    return f"{head or 'unknown'}" + (
        " with uncommitted changes in extproc/ or envoy/" if dirty else ""
    )


def _tollgate_settings(extra: list[str]) -> dict[str, str]:
    settings: dict[str, str] = {}
    for item in extra:
        name, _, value = item.partition("=")
        settings[name.lower().removeprefix("tollgate_")] = value

    return settings


def _telemetry_note(topo: Topology, enabled: bool) -> str:
    if not enabled:
        return (
            "off (--telemetry off): Tollgate with OTEL_SDK_DISABLED=true, "
            "Envoy tracing taken out"
        )
    if topo.otlp_sink is None:
        return "on, but no collector ran"
    spans, exports = otlp_sink.totals_from_log(topo.otlp_sink.log_path.read_text())
    sink_cpu_s = cpu_seconds(topo.otlp_sink.pid)

    return (
        "on: Tollgate exported traces and metrics over OTLP/gRPC (metrics every "
        "10 s) and every Envoy its spans (as envoy/local.yaml traces) to a "
        "stand-in collector, bench/tollbench/otlp_sink.py, which received "
        f"{spans:,} spans and {exports} metric exports and used {sink_cpu_s:.0f} s "
        "of CPU on this machine's cores (a real collector runs elsewhere)"
    )


@contextlib.contextmanager
def _workdir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path.resolve()
        return
    temporary = Path(tempfile.mkdtemp(prefix="tollgate-bench-"))
    try:
        yield temporary
    except BaseException:
        # The logs are what explains a failed run: keep them.
        progress(f"run failed; configs and logs kept in {temporary}")
        raise
    shutil.rmtree(temporary, ignore_errors=True)


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _output(argv: list[str]) -> str:
    completed = subprocess.run(
        argv, capture_output=True, text=True, timeout=10, check=False
    )
    return completed.stdout.strip()


def _insert_after(lines: list[str], prefix: str, line: str) -> None:
    index = next(i for i, text in enumerate(lines) if text.startswith(prefix))
    lines.insert(index + 1, line)


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]
