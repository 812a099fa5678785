"""One measured wrk run against one target, and the matrix of them (rounds x workloads x targets).

Around each run we sample what makes a number trustworthy or not: CPU of the proxy's process group, CPU used
by processes this run did not start, and the backend's accepted connections and requests (stub_status), so
upstream keep-alive and real forwarding are visible in every result.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.bench.process_cpu import groups_cpu_seconds, machine_busy_seconds
from tests.bench.report import Measurement, Upstream
from tests.bench.sampling_profile import start_sampling, summarise
from tests.bench.targets import CorePlan, Target, TargetBroken, backend_counters
from tests.bench.workloads import Workload
from tests.bench.wrk_result import WrkOutputError, parse_wrk_output, wrk_argv


@dataclass
class Session:
    """What every measurement of one invocation shares."""

    args: argparse.Namespace
    plan: CorePlan
    script: Path  # the wrk reporter
    backend: Target
    started: list[Target]  # every target this run started (the backend first), for CPU accounting


def run_wrk(
    session: Session, target: Target, workload: Workload, duration_seconds: int, *, measured: bool = False
) -> tuple[Measurement, str]:
    args, plan, started = session.args, session.plan, session.started
    if workload.tls:
        assert target.tls_port is not None
        url = f"https://127.0.0.1:{target.tls_port}{workload.payload.path}"
    else:
        url = f"http://127.0.0.1:{target.port}{workload.payload.path}"
    headers = (f"Authorization: Bearer {target.bearer_token}",) if workload.protected else ()
    argv = wrk_argv(
        url=url,
        close_each=workload.new_connection_per_request,
        host=workload.host,
        headers=headers,
        script_path=str(session.script),
        threads=args.threads,
        connections=args.connections,
        duration_seconds=duration_seconds,
    )
    if plan.load_core is not None:
        argv = ["taskset", "-c", str(plan.load_core), *argv]
    # Every process group this run started, plus wrk itself (a waited-for child): the rest of the machine's
    # busy time during the run is other work, reported so a disturbed figure is visible as such.
    groups = [
        s.pid for t in started for s in t.services if s.process is not None and s.process.poll() is None
    ]
    backend_before = backend_counters(session.backend)
    cpu_before, busy_before = groups_cpu_seconds(groups), machine_busy_seconds()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    sampler = None
    profile_dir: Path | None = args.profile_ours
    stacks = profile_dir / f"{workload.name}.txt" if profile_dir is not None else None
    if measured and stacks is not None and target.name == "ours" and target.measured is not None:
        sampler = start_sampling(target.measured.pid, duration_seconds, stacks)
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=duration_seconds + 60)
    if sampler is not None and stacks is not None and profile_dir is not None:
        sampler.wait(timeout=30)
        if stacks.exists():
            with (profile_dir / "summary.txt").open("a") as summary:
                summary.write(summarise(stacks) + "\n")
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_after, busy_after = groups_cpu_seconds(groups), machine_busy_seconds()
    backend_after = backend_counters(session.backend)
    for service in target.services:
        if service.process is not None and service.process.poll() is not None:
            raise TargetBroken(
                f"{service.name} exited with {service.process.returncode} during the run:\n"
                f"{service.log_tail(15)}"
            )
    if result.returncode != 0:
        raise WrkOutputError(
            f"wrk exited {result.returncode}: {result.stderr.strip() or result.stdout[-500:]}"
        )
    wrk = parse_wrk_output(result.stdout)
    ours_seconds = sum(cpu_after[g] - cpu_before[g] for g in groups)
    ours_seconds += (children_after.ru_utime + children_after.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    other = max(0.0, (busy_after - busy_before) - ours_seconds)
    cpu = None
    if target.measured is not None:
        pgid = target.measured.pid
        cpu = cpu_after[pgid] - cpu_before[pgid]
    upstream = Upstream(
        connections_opened=backend_after.accepted_connections - backend_before.accepted_connections,
        requests=backend_after.requests - backend_before.requests,
    )
    return Measurement(target.name, workload.name, wrk, cpu, other, upstream), result.stdout


def measure_matrix(
    session: Session,
    live: dict[str, Target],
    workloads: list[Workload],
    rounds: dict[str, dict[str, list[Measurement]]],
    failures: list[str],
    log: Callable[[str], None],
) -> None:
    """Every round measures every workload on every live target; rounds interleave so a burst of outside
    load lands on one round of each target rather than on all runs of one."""
    args = session.args
    for round_index in range(args.rounds):
        if args.rounds > 1:
            log(f"round {round_index + 1}/{args.rounds}")
        for workload in workloads:
            for name in args.targets:
                target = live.get(name)
                if target is None or (workload.tls and target.tls_port is None):
                    continue
                if workload.protected and target.bearer_token is None:
                    continue  # the peers cannot check our tokens (see tests/bench/README.md)
                try:
                    if args.warmup > 0:
                        run_wrk(session, target, workload, args.warmup)
                    measurement, _ = run_wrk(session, target, workload, args.duration, measured=True)
                except TargetBroken as exc:
                    failures.append(f"{name} {workload.name}: {exc}")
                    log(f"{name} {workload.name}: FAILED, not measured further: {exc}")
                    live.pop(name, None)
                    continue
                except (WrkOutputError, OSError, subprocess.TimeoutExpired) as exc:
                    failures.append(f"{name} {workload.name}: {exc}")
                    log(f"{name} {workload.name}: wrk FAILED: {exc}")
                    continue
                rounds.setdefault(workload.name, {}).setdefault(name, []).append(measurement)
                w = measurement.wrk
                log(
                    f"  {workload.name:>13} {name:<8} {w.requests_per_second:>10,.0f} req/s  p99 "
                    f"{w.latency_p99_ms:.2f} ms  errors {w.errors}  "
                    f"other cpu {measurement.other_cpu_percent:.0f}%"
                )
