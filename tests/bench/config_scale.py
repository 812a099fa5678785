"""Config at scale (issue 10): how fast a change is live with many proxies, how many creates per second the
API takes while a data plane serves, and what the data plane's tables cost in memory.

    python -m tests.bench.config_scale [--proxies N] [--routes-per-proxy N] [--changes N] [--creates N]

Starts its own redis-server, control plane and data plane on loopback; seeds the proxies and routes straight
into Redis in the control plane's format (one transaction per 500 objects, with their change events); then
1. change live: creates a proxy through the API, and polls the data plane (one keep-alive connection, every
   millisecond) until it stops answering 404 for that host; `--changes` times, reports p50 / p99 / max;
2. create throughput: `--creates` proxies through the API by 8 concurrent clients, wall time;
3. the data plane's RSS before seeding and after (VmRSS).
Prints a table and writes JSON (`--output`). Timings never decide the exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis

from shared import keys
from shared.models import ChangeEvent, ProxyTarget, Route
from tests.control_plane.conftest import ADMIN, control_plane_env, start_control_plane
from tests.data_plane.conftest import DataPlane, start_data_plane
from tests.harness.services import RedisServer, free_port, start_redis

SEED_BATCH = 500
TARGET = "http://127.0.0.1:9"  # never connected to: the bench asks only "404 or not"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def seed(client: redis.Redis, proxies: int, routes_per_proxy: int) -> int:
    """Write proxies and routes as the control plane's store does: objects, version, one event each."""
    version = int(client.get(keys.config_version()) or 0)
    objects: list[tuple[str, str, str, str]] = []  # (kind, hash key, id, json)
    for index in range(proxies):
        hostname = f"p{index}.scale.example.com"
        proxy = ProxyTarget(hostname=hostname, target_url=TARGET)
        objects.append(("proxy", keys.proxies(), hostname, proxy.model_dump_json()))
        for number in range(routes_per_proxy):
            route = Route(
                id=f"r{index}-{number}",
                path_pattern=f"/api/v{number}",
                target_url=TARGET,
                scope="proxies",
                proxy_hostnames=[hostname],
            )
            objects.append(("route", keys.routes(), route.id, route.model_dump_json()))
    for start in range(0, len(objects), SEED_BATCH):
        version += 1
        with client.pipeline(transaction=True) as pipe:
            for kind, key, object_id, raw in objects[start : start + SEED_BATCH]:
                pipe.hset(key, object_id, raw)
                event = ChangeEvent(version=version, kind=kind, action="created", name=object_id)  # type: ignore[arg-type]
                pipe.xadd(keys.changes_stream(), event.to_stream_fields(), maxlen=10_000, approximate=True)
            pipe.set(keys.config_version(), version)
            pipe.execute()
        client.publish(keys.changes_channel(), str(version))
    return version


class Poller:
    """One keep-alive connection to the data plane, asking for a host until it is not 404."""

    def __init__(self, port: int) -> None:
        self._client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)

    def until_live(self, host: str, deadline_seconds: float = 10.0) -> float:
        started = time.perf_counter()
        while time.perf_counter() - started < deadline_seconds:
            if self._client.get("/", headers={"Host": host}).status_code != 404:
                return time.perf_counter() - started
            time.sleep(0.001)
        raise TimeoutError(f"{host} not live after {deadline_seconds} s")


def change_latencies(api_url: str, plane: DataPlane, count: int) -> list[float]:
    poller = Poller(plane.http_port)
    out: list[float] = []
    with httpx.Client(base_url=api_url, headers=ADMIN, timeout=30) as api:
        for index in range(count):
            host = f"live{index}.scale.example.com"
            response = api.post(
                "/api/v1/proxy/targets/", json={"hostname": host, "target_url": TARGET, "enable_https": False}
            )
            response.raise_for_status()
            out.append(poller.until_live(host))
    return out


async def create_many(api_url: str, count: int, concurrency: int = 8) -> float:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(count):
        queue.put_nowait(index)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            index = queue.get_nowait()
            body = {"hostname": f"bulk{index}.scale.example.com", "target_url": TARGET, "enable_https": False}
            response = await client.post("/api/v1/proxy/targets/", json=body)
            if response.status_code != 201:
                raise RuntimeError(f"create answered {response.status_code}: {response.text}")

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=api_url, headers=ADMIN, timeout=60) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return time.perf_counter() - started


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="mhp-config-scale-"))
    redis_server: RedisServer = start_redis(workdir / "redis")
    services = []
    try:
        port = free_port()
        env = control_plane_env(redis_server, port)
        env.update(ACME_WORKER_ENABLED="false", LOG_LEVEL="WARNING")
        control = start_control_plane(env, port, workdir)
        services.append(control)
        plane = start_data_plane(redis_server, workdir, {"LOG_LEVEL": "WARNING"})
        services.append(plane.service)
        api_url = f"http://127.0.0.1:{port}"
        client = redis.Redis.from_url(redis_server.url, password=redis_server.password, decode_responses=True)
        rss_empty = rss_mib(plane.service.pid)
        seeded_at = time.perf_counter()
        version = seed(client, args.proxies, args.routes_per_proxy)
        plane.wait_for_version(version, timeout=300)
        seed_seconds = time.perf_counter() - seeded_at
        rss_seeded = rss_mib(plane.service.pid)
        latencies = change_latencies(api_url, plane, args.changes)
        create_seconds = asyncio.run(create_many(api_url, args.creates))
        rss_after = rss_mib(plane.service.pid)
        return {
            "proxies": args.proxies,
            "routes": args.proxies * args.routes_per_proxy,
            "seed_seconds": seed_seconds,
            "change_live_ms": {
                "p50": 1000 * statistics.median(latencies),
                "p99": 1000 * percentile(latencies, 0.99),
                "max": 1000 * max(latencies),
                "count": len(latencies),
            },
            "creates": args.creates,
            "create_seconds": create_seconds,
            "creates_per_second": args.creates / create_seconds,
            "data_plane_rss_mib": {"empty": rss_empty, "seeded": rss_seeded, "after_creates": rss_after},
            "load_average": os.getloadavg(),
        }
    finally:
        for service in reversed(services):
            service.stop()
        redis_server.service.stop()


def render(result: dict[str, Any]) -> str:
    live = result["change_live_ms"]
    rss = result["data_plane_rss_mib"]
    rows = [
        ("proxies / routes", f"{result['proxies']:,} / {result['routes']:,}"),
        ("change live p50 / p99 / max (ms)", f"{live['p50']:.1f} / {live['p99']:.1f} / {live['max']:.1f}"),
        (f"{result['creates']:,} creates by 8 clients (s)", f"{result['create_seconds']:.2f}"),
        ("creates per second", f"{result['creates_per_second']:.0f}"),
        ("data-plane RSS empty / seeded (MiB)", f"{rss['empty']:.0f} / {rss['seeded']:.0f}"),
        ("load average during the run", " ".join(f"{x:.2f}" for x in result["load_average"])),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.config_scale", description=__doc__)
    parser.add_argument("--proxies", type=int, default=10_000)
    parser.add_argument("--routes-per-proxy", type=int, default=2)
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--creates", type=int, default=1000)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    result = run(args)
    print(render(result))
    if args.output:
        args.output.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
