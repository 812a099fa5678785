"""The rows wrk cannot drive, measured on every proxy in the same run (load programs: stream_peers.py):

- `ws-echo`: WebSocket 32-byte echo round trips per second over `connections` tunnels (DIRECT: straight to
  the echo backend, the limit of the load core);
- `sse-delay`: server-sent events at 6,400 events/s spread over 64 streams: each event's delay from the
  backend's write to the client's read (p50/p99/max), and how many were lost;
- `idle-memory`: the proxy's resident memory (its whole process group) grown by 10,000 idle keep-alive
  connections that have each carried one small GET, scaled to per 10,000.

Every program runs on the load core, like wrk; the proxy's CPU is sampled as for wrk runs. Numbers are
reported, never judged here (report.issue_goals does that, for information).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.bench.our_data_plane import REPO_ROOT
from tests.bench.peer_configs import BENCH_HOST, SSE_HOST, WS_HOST, StreamPorts
from tests.bench.process_cpu import group_rss_bytes, groups_cpu_seconds
from tests.bench.targets import HOST, CorePlan, Target, pinned
from tests.harness.services import ServiceProcess, port_open

SSE_EVENTS_PER_SECOND = 6400
SSE_STREAMS = 64
IDLE_CONNECTIONS = 10_000
EXTRA_ROWS = ("ws-echo", "sse-delay", "idle-memory")


@dataclass
class StreamBackends:
    ports: StreamPorts
    ws: ServiceProcess


def _peer_argv(plan: CorePlan, *args: str) -> list[str]:
    return pinned([sys.executable, "-m", "tests.bench.stream_peers", *args], plan.load_core)


def start_ws_backend(workdir: Path, plan: CorePlan, port: int) -> ServiceProcess:
    service = ServiceProcess(
        name="ws echo backend",
        argv=_peer_argv(plan, "ws-backend", str(port)),
        log_path=workdir / "ws-backend.out",
        ready=lambda: port_open(HOST, port),
        cwd=REPO_ROOT,
    )
    service.start()
    return service


def _run_json(argv: list[str], timeout_seconds: float) -> dict[str, Any]:
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout_seconds, check=False, cwd=REPO_ROOT
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"{argv[-6:]} failed ({result.returncode}): {result.stderr.strip()[-400:]}")
    parsed: dict[str, Any] = json.loads(lines[-1])
    return parsed


def _cpu_of(target: Target) -> int | None:
    return target.measured.pid if target.measured is not None else None


def _with_cpu(target: Target, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    pgid = _cpu_of(target)
    before = groups_cpu_seconds([pgid]) if pgid is not None else {}
    started = time.monotonic()
    result = run()
    if pgid is not None:
        used = groups_cpu_seconds([pgid])[pgid] - before[pgid]
        result["cpu_percent"] = round(100 * used / (time.monotonic() - started), 1)
    return result


def ws_echo(plan: CorePlan, target: Target, port: int, connections: int, seconds: int) -> dict[str, Any]:
    argv = _peer_argv(plan, "ws-client", f"{HOST}:{port}", WS_HOST, str(connections), str(seconds))
    return _with_cpu(target, lambda: _run_json(argv, seconds + 60))


def sse_delay(
    workdir: Path, plan: CorePlan, target: Target, port: int, sse_port: int, seconds: int
) -> dict[str, Any]:
    # A fresh backend per target: its count of events written starts at zero and ends with the run.
    backend = ServiceProcess(
        name="sse backend",
        argv=_peer_argv(plan, "sse-backend", str(sse_port), str(SSE_EVENTS_PER_SECOND)),
        log_path=workdir / f"sse-backend-{target.name}.out",
        ready=lambda: port_open(HOST, sse_port),
        cwd=REPO_ROOT,
    )
    backend.start()
    try:
        argv = _peer_argv(plan, "sse-client", f"{HOST}:{port}", SSE_HOST, str(SSE_STREAMS), str(seconds))
        result = _with_cpu(target, lambda: _run_json(argv, seconds + 60))
    finally:
        backend.stop()
    result["lost"] = max(0, int(result["sent"]) - int(result["received"]))
    return result


def idle_memory(plan: CorePlan, target: Target) -> dict[str, Any]:
    assert target.measured is not None
    pgid = target.measured.pid
    before = group_rss_bytes(pgid)
    argv = _peer_argv(plan, "idle-client", f"{HOST}:{target.port}", BENCH_HOST, str(IDLE_CONNECTIONS))
    client = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    try:
        assert client.stdout is not None and client.stdin is not None
        line = client.stdout.readline()
        opened = json.loads(line) if line.startswith("{") else {"open": 0, "failed": IDLE_CONNECTIONS}
        time.sleep(1.0)  # let the proxy settle (idle timers armed, buffers released)
        after = group_rss_bytes(pgid)
        client.stdin.close()
        client.wait(timeout=60)
    finally:
        if client.poll() is None:
            client.kill()
    held = int(opened["open"])
    grown = after - before
    return {
        "connections": held,
        "failed": int(opened["failed"]),
        "rss_before_mb": round(before / 1e6, 1),
        "rss_after_mb": round(after / 1e6, 1),
        "mb_per_10k": round(grown / 1e6 * 10_000 / held, 1) if held else None,
    }


def _measure(
    row: str,
    workdir: Path,
    plan: CorePlan,
    target: Target,
    streams: StreamPorts,
    connections: int,
    seconds: int,
) -> dict[str, Any]:
    direct = target.name == "direct"  # straight to the stream backends: the load core's own limit
    if row == "ws-echo":
        return ws_echo(plan, target, streams.ws if direct else target.port, connections, seconds)
    if row == "sse-delay":
        return sse_delay(workdir, plan, target, streams.sse if direct else target.port, streams.sse, seconds)
    return idle_memory(plan, target)


def measure_extra_rows(
    workdir: Path,
    plan: CorePlan,
    live: dict[str, Target],
    order: list[str],
    streams: StreamPorts,
    connections: int,
    seconds: int,
    log: Callable[[str], None],
) -> tuple[dict[str, dict[str, dict[str, Any]]], list[str]]:
    """row -> target -> result, and the failures."""
    results: dict[str, dict[str, dict[str, Any]]] = {row: {} for row in EXTRA_ROWS}
    failures: list[str] = []
    for name in order:
        target = live.get(name)
        if target is None:
            continue
        for row in EXTRA_ROWS:
            if row == "idle-memory" and name == "direct":
                continue  # the backend is no proxy
            try:
                result = _measure(row, workdir, plan, target, streams, connections, seconds)
            except (RuntimeError, OSError, subprocess.TimeoutExpired, ValueError, KeyError) as exc:
                failures.append(f"{name} {row}: {exc}")
                log(f"  {row:>13} {name:<8} FAILED: {exc}")
                continue
            results[row][name] = result
            log(f"  {row:>13} {name:<8} {json.dumps(result)}")
    return results, failures
