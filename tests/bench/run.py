"""`just bench` entry point: `python -m tests.bench.run [--quick] [--targets ...] [--sizes ...]`.

Starts the backend and every requested proxy on loopback (pinned as targets.CorePlan says), checks each serves
the payloads byte-exact, then for each workload (sizes over HTTP, then TLS) runs wrk against each target
(warm-up, then the measured run), then (proxies stopped) the request-log index rows of
tests/bench/log_index.py at `--log-entries` (no peer has one: they stand beside issue 12's targets), prints
one table per workload with ratios to DIRECT and ours-to-peer, and saves everything as JSON. Every child is
stopped by PID at the end, also on Ctrl-C, SIGTERM or an error. Exit status: 0 when every requested target was
measured (ours may be skipped as "not available"), 1 when a target failed, 2 when a prerequisite is missing,
130 when interrupted. Timings never decide the exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from tests.bench import log_index
from tests.bench.environment import background_cpu_percent, machine, versions
from tests.bench.extra_rows import EXTRA_ROWS, measure_extra_rows, start_ws_backend
from tests.bench.measure import Session, measure_matrix
from tests.bench.our_data_plane import start_ours, unavailable_reason
from tests.bench.peer_configs import BENCH_HOST, PAYLOADS, PROTECTED_HOST, StreamPorts
from tests.bench.prerequisites import MissingPrerequisite, ensure_binaries
from tests.bench.report import (
    NOISY_OTHER_CPU_PERCENT,
    TARGET_ORDER,
    Measurement,
    best_run,
    issue_goals,
    ratios,
    render_extra_rows,
    render_goals,
    render_log_rows,
    render_table,
)
from tests.bench.targets import (
    CorePlan,
    Target,
    TargetBroken,
    fetch,
    plan_cores,
    start_backend,
    start_caddy,
    start_haproxy,
    start_nginx_proxy,
    verify,
    write_payloads,
)
from tests.bench.tls_material import TlsFiles, write_tls_files
from tests.bench.workloads import plan_workloads
from tests.bench.wrk_result import REPORTER_LUA
from tests.harness.services import ServiceStartError, free_port

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# The request-log rows: about a minute at this scale on a 2-core machine (issue 12 asks for 1M: bench-logs).
LOG_ENTRIES = 200_000
QUICK_LOG_ENTRIES = 20_000
LOG_HOSTS = 50
LOG_SAMPLES = 100
QUICK_LOG_SAMPLES = 10
PEER_STARTERS: dict[str, Callable[[Path, CorePlan, int, TlsFiles | None, StreamPorts | None], Target]] = {
    "caddy": start_caddy,
    "nginx": start_nginx_proxy,
    "haproxy": start_haproxy,
}
BINARIES_OF_TARGET = {
    "direct": [],
    "ours": ["redis-server"],
    "caddy": ["caddy"],
    "nginx": [],
    "haproxy": ["haproxy"],
}


def _csv(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(value: str) -> list[str]:
        items = [item.strip() for item in value.split(",") if item.strip()]
        unknown = [item for item in items if item not in allowed]
        if unknown or not items:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)} (got {value!r})")
        return list(dict.fromkeys(items))

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="measured seconds per target and size (10)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds before each measured run (2)")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections (50)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1: wrk has one core)")
    parser.add_argument(
        "--sizes",
        type=_csv(tuple(PAYLOADS)),
        default=list(PAYLOADS),
        help=f"comma list of {','.join(PAYLOADS)}",
    )
    parser.add_argument(
        "--targets",
        type=_csv(TARGET_ORDER),
        default=list(TARGET_ORDER),
        help=f"comma list of {','.join(TARGET_ORDER)} (DIRECT is always measured)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 s warm-up, 1 s measured, 10 conns")
    parser.add_argument(
        "--output", type=Path, default=None, help="JSON path (default tests/bench/results/<ts>.json)"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat the whole matrix; report each target's best run (1)"
    )
    parser.add_argument(
        "--no-tls",
        dest="tls",
        action="store_false",
        help="skip the TLS workloads (keep-alive and handshakes)",
    )
    parser.add_argument(
        "--profile-ours",
        type=Path,
        default=None,
        metavar="DIR",
        help="sample our data plane with py-spy in each measured run: DIR/<workload>.txt, DIR/summary.txt",
    )
    parser.add_argument(
        "--no-extra-rows",
        dest="extra_rows",
        action="store_false",
        help=f"skip the rows wrk cannot drive ({', '.join(EXTRA_ROWS)})",
    )
    parser.add_argument(
        "--log-entries",
        type=int,
        default=None,
        metavar="N",
        help=f"request-log index rows at N entries ({LOG_ENTRIES:,}; --quick {QUICK_LOG_ENTRIES:,}; "
        "`just bench-logs` runs 1,000,000)",
    )
    parser.add_argument(
        "--no-log-rows", dest="log_rows", action="store_false", help="skip the request-log index rows"
    )
    parser.add_argument("--keep-workdir", action="store_true", help="keep configs and logs for inspection")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.connections = 1, 1, 10
    if args.log_entries is None:
        args.log_entries = QUICK_LOG_ENTRIES if args.quick else LOG_ENTRIES
    if args.log_entries < 1000:
        parser.error("--log-entries must be at least 1000")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.duration < 1 or args.warmup < 0 or args.connections < 1 or args.threads < 1:
        parser.error("--duration >= 1, --warmup >= 0, --connections >= 1, --threads >= 1")
    if args.connections < args.threads:
        parser.error("--connections must be at least --threads (wrk needs one connection per thread)")
    if "direct" not in args.targets:
        args.targets.insert(0, "direct")
    args.targets = [name for name in TARGET_ORDER if name in args.targets]
    return args


def log(message: str) -> None:
    print(message, flush=True)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (e.g. from `timeout` or CI) cleans up exactly like Ctrl-C."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def start_targets(
    args: argparse.Namespace,
    workdir: Path,
    plan: CorePlan,
    backend: Target,
    status: dict[str, dict[str, Any]],
    started: list[Target],
    tls: TlsFiles | None,
    streams: StreamPorts | None,
) -> None:
    payloads = [PAYLOADS[size] for size in args.sizes]
    for name in args.targets:
        if name == "direct":
            target: Target | None = backend
        elif name == "ours" and (reason := unavailable_reason()) is not None:
            status[name] = {"status": "skipped", "reason": reason}
            log(f"ours: not available, skipped: {reason}")
            continue
        else:
            target = None
        try:
            if target is None:
                if name == "ours":
                    target = start_ours(workdir, plan, backend.port, tls, streams=streams)
                else:
                    target = PEER_STARTERS[name](workdir, plan, backend.port, tls, streams)
                started.append(target)
            # Our data plane may bind before its first table load finishes: give it a moment to route.
            checks = verify(
                target,
                payloads,
                tls_cafile=tls.cert_path if tls else None,
                wait_seconds=5.0 if name == "ours" else 1.0,
            )
            if target.bearer_token is not None:
                _check_protected(target)
        except (ServiceStartError, TargetBroken, OSError, subprocess.CalledProcessError) as exc:
            status[name] = {"status": "failed", "reason": str(exc)}
            log(f"{name}: FAILED to start or serve correctly: {exc}")
            if target is not None and target is not backend:
                target.stop()
            continue
        status[name] = {"status": "ok", "port": target.port, "tls_port": target.tls_port, **checks}
        log(
            f"{name}: ready on 127.0.0.1:{target.port}"
            + (f", TLS on {target.tls_port}" if target.tls_port else "")
        )


def _check_protected(target: Target) -> None:
    """The protected proxy answers the bench token with the payload, and refuses a request without one."""
    small = PAYLOADS["small"]
    bearer = {"Authorization": f"Bearer {target.bearer_token}"}
    status, body = fetch(target.port, small.path, host=PROTECTED_HOST, headers=bearer)
    if (status, body) != (200, small.content()):
        raise TargetBroken(f"protected GET with a valid token: status {status}, {len(body)} bytes")
    status, _ = fetch(target.port, small.path, host=PROTECTED_HOST)
    if status != 401:
        raise TargetBroken(f"protected GET without a token answered {status}, not 401")


def raise_open_files_limit(wanted: int = 65536) -> int:
    """The idle-connection row holds 10,000 connections per proxy (HAProxy reserves two descriptors per
    connection): raise the soft limit, and as root the hard one, for us and every child; returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limit in ((wanted, max(hard, wanted)), (min(wanted, hard), hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limit)
            return limit[0]
        except (ValueError, OSError):
            continue
    return soft


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    needed = ["wrk", "nginx"] + (["taskset"] if len(os.sched_getaffinity(0)) >= 2 else [])
    for name in args.targets:
        needed += BINARIES_OF_TARGET[name]
    if args.log_rows:
        needed.append("redis-server")
    try:
        ensure_binaries(needed, log=log)
    except MissingPrerequisite as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2

    plan = plan_cores()
    if args.profile_ours is not None:
        args.profile_ours.mkdir(parents=True, exist_ok=True)
        (args.profile_ours / "summary.txt").unlink(missing_ok=True)
    open_files = raise_open_files_limit()
    background = background_cpu_percent()
    if background > NOISY_OTHER_CPU_PERCENT:
        log(
            f"bench: WARNING: the machine is busy before we start ({background:.0f}% of a core used by other "
            "processes): figures will be disturbed; see the 'other %' column"
        )
    workloads = plan_workloads(args.sizes, tls=args.tls)
    started_at = dt.datetime.now(dt.UTC)
    output = args.output or RESULTS_DIR / f"{started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
    workdir = Path(tempfile.mkdtemp(prefix="mhp-bench-"))
    workdir.chmod(0o755)  # nginx workers run as nobody when we are root: they must read the webroot
    status: dict[str, dict[str, Any]] = {}
    # size -> target -> one measurement per round (a run interrupted midway keeps what it has)
    rounds: dict[str, dict[str, list[Measurement]]] = {}
    failures: list[str] = []
    started: list[Target] = []
    extras: dict[str, dict[str, dict[str, Any]]] = {}
    interrupted = False
    log(f"bench: {plan.note}")
    log(
        f"bench: wrk -t{args.threads} -c{args.connections}, {args.warmup}s warm-up + {args.duration}s per "
        f"target and size; sizes {','.join(args.sizes)}; targets {','.join(args.targets)}"
    )
    try:
        with sigterm_as_interrupt():
            write_payloads(workdir / "www", list(PAYLOADS.values()))
            backend = start_backend(workdir, plan, workdir / "www")
            started.append(backend)
            tls = write_tls_files(workdir / "tls") if args.tls else None
            streams = StreamPorts(free_port("127.0.0.1"), free_port("127.0.0.1")) if args.extra_rows else None
            ws_backend = start_ws_backend(workdir, plan, streams.ws) if streams is not None else None
            if ws_backend is not None:
                backend.services.append(ws_backend)
            start_targets(args, workdir, plan, backend, status, started, tls, streams)
            script = workdir / "reporter.lua"
            script.write_text(REPORTER_LUA)
            live = {t.name: t for t in started if status.get(t.name, {}).get("status") == "ok"}
            session = Session(args, plan, script, backend, started)
            measure_matrix(session, live, workloads, rounds, failures, log)
            if streams is not None:
                log(f"bench: rows wrk cannot drive: {', '.join(EXTRA_ROWS)} (open-files limit {open_files})")
                extras, extra_failures = measure_extra_rows(
                    workdir, plan, live, args.targets, streams, args.connections, args.duration, log
                )
                failures += extra_failures
    except KeyboardInterrupt:
        interrupted = True
        log("bench: interrupted; stopping every child process")
    except (ServiceStartError, OSError) as exc:
        failures.append(f"harness: {exc}")
        log(f"bench: FAILED: {exc}")
    finally:
        for target in reversed(started):
            target.stop()
        if args.profile_ours is not None:
            log(f"bench: py-spy stacks of our data plane per workload and summary.txt in {args.profile_ours}")
        if args.keep_workdir:
            log(f"bench: configs and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    log_rows: dict[str, Any] | None = None
    if args.log_rows and not interrupted:
        # After the proxies are stopped: its redis-server and this process get the machine to themselves.
        log(f"bench: request-log index rows: {args.log_entries:,} entries over {LOG_HOSTS} proxies")
        try:
            with sigterm_as_interrupt():
                log_rows = asyncio.run(
                    log_index.bench(
                        argparse.Namespace(
                            entries=args.log_entries,
                            hosts=LOG_HOSTS,
                            samples=QUICK_LOG_SAMPLES if args.quick else LOG_SAMPLES,
                            batch=1000,
                        ),
                        out=lambda line: log(f"bench-logs: {line}"),
                    )
                ).to_json()
        except KeyboardInterrupt:
            interrupted = True
            log("bench: interrupted during the request-log rows")
        except (ServiceStartError, OSError) as exc:
            failures.append(f"request-log rows: {exc}")
            log(f"bench: request-log rows FAILED: {exc}")

    finished_at = dt.datetime.now(dt.UTC)
    results = {size: {name: best_run(runs) for name, runs in by.items()} for size, by in rounds.items()}
    document: dict[str, Any] = {
        "schema_version": 1,
        "started_at": started_at.isoformat(),
        "finished_at": finished_at.isoformat(),
        "interrupted": interrupted,
        "machine": machine(plan, background),
        "settings": {
            "duration_seconds": args.duration,
            "warmup_seconds": args.warmup,
            "connections": args.connections,
            "threads": args.threads,
            "quick": args.quick,
            "rounds": args.rounds,
            "ours_profiled": args.profile_ours is not None,
            "host_header": BENCH_HOST,
            "sizes": {size: PAYLOADS[size].size_bytes for size in args.sizes},
            "targets": args.targets,
            "workloads": {w.name: w.description for w in workloads},
        },
        "versions": versions(args.targets),
        "targets": status,
        "rounds": {
            size: {name: [round(m.wrk.requests_per_second, 1) for m in runs] for name, runs in by.items()}
            for size, by in rounds.items()
        },
        "results": {size: {n: m.to_json() for n, m in by.items()} for size, by in results.items()},
        "ratios": {size: ratios(by) for size, by in results.items()},
        "extra_rows": extras,
        "log_index": log_rows,
        "goals": [goal.to_json() for goal in issue_goals(results, extras)],
        "failures": failures,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=2) + "\n")

    print()
    print(f"machine: {document['machine']['cpu_model']}, {plan.note}")
    print(
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s (after {args.warmup}s warm-up), "
        f"Host: {BENCH_HOST}, {args.rounds} round(s), best shown; MB/s counts headers; cpu % = the proxy's "
        "process group on its core; other % = CPU used meanwhile by processes this run did not start"
    )
    for workload in workloads:
        if workload.name in results:
            print()
            print(render_table(f"{workload.name}: {workload.description}", results[workload.name]))
    if extras:
        print()
        print(render_extra_rows(extras))
    if log_rows is not None:
        print()
        print(render_log_rows(log_rows))
    print()
    print(render_goals(issue_goals(results, extras)))
    for name, info in status.items():
        if info["status"] != "ok":
            print(f"{name}: {info['status']}: {info['reason']}")
    print(f"\nsaved {output}")
    if interrupted:
        return 130
    broken = [n for n, info in status.items() if info["status"] == "failed"]
    return 1 if broken or failures else 0


if __name__ == "__main__":
    sys.exit(main())
