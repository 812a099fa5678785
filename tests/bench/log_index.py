"""Request-log indexing and query bench (not a test: it prints numbers and never fails on them).

    python -m tests.bench.log_index [--entries 1000000] [--hosts 50] [--samples 200] [--batch 1000]

On a private redis-server (127.0.0.1, no persistence) it writes N synthetic entries spread over the last 24
hours (the data plane's own field encoder, XADD with explicit ids), then measures:
- indexer throughput: entries/s of one LogIndexer (one Python process, one core; Redis on its own core),
  with the CPU seconds of each side;
- Redis memory per million entries: the stream alone, then with indexes and aggregates;
- search latency (p50/p95 over `--samples` runs of each query shape, in-process: no HTTP);
- stats latency for a day (hour buckets): one host, every host (the admin), a token owning 3 proxies and one
  owning them all.
See tests/bench/README.md ("Request-log index") for the targets and the last results.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from control_plane.logs.indexer import LogIndexer
from control_plane.logs.query import HostScope, LogFilter, StatusFilter
from control_plane.logs.search import LogSearch
from control_plane.logs.stats import LogStats, StatsRequest
from data_plane.request_log import RequestLogEntry
from shared import keys
from tests.harness.services import start_redis

DAY_SECONDS = 86400
STATS_ONE_HOST = "one host, a day by hour"
STATS_EVERY_HOST = "every host, a day by hour"
TOOLS = [f"tool_{n}" for n in range(20)]


def synthetic(rng: random.Random, number: int, at: float, hosts: list[str]) -> RequestLogEntry:
    roll = rng.random()
    status = (
        200 if roll < 0.90 else 404 if roll < 0.95 else 401 if roll < 0.98 else rng.choice([500, 502, 503])
    )
    mcp = rng.random() < 0.5
    return RequestLogEntry(
        time=at,
        client_ip=f"10.{rng.randrange(20)}.{rng.randrange(250)}.{rng.randrange(20)}",
        host=rng.choice(hosts),
        method="POST" if mcp else rng.choice(["GET", "GET", "GET", "PUT", "DELETE"]),
        path="/mcp" if mcp else f"/api/items/{rng.randrange(200)}?page={rng.randrange(5)}",
        status=status,
        bytes_in=rng.randrange(100, 5000),
        bytes_out=rng.randrange(200, 100_000),
        duration_seconds=rng.lognormvariate(-4.0, 1.2),
        upstream="http://10.0.0.1:8080",
        route_id="",
        request_id=f"bench{number:012x}",
        user=f"user{rng.randrange(2000)}" if rng.random() < 0.8 else "",
    )


async def fill(redis: aioredis.Redis, entries: int, hosts: list[str], now: float) -> list[RequestLogEntry]:
    """N entries over the last day, oldest first; returns a sample of them to query for."""
    rng = random.Random(12)
    start_ms = int((now - DAY_SECONDS) * 1000)
    step = DAY_SECONDS * 1000 / entries
    stream = keys.request_log_stream()
    sample: list[RequestLogEntry] = []
    pipe = redis.pipeline(transaction=False)
    for number in range(entries):
        ms = start_ms + int(number * step)
        entry = synthetic(rng, number, ms / 1000, hosts)
        fields: Any = entry.to_stream_fields()
        fields["mcp_tool"] = rng.choice(TOOLS) if entry.path == "/mcp" else ""
        fields["mcp_method"] = "tools/call" if fields["mcp_tool"] else ""
        pipe.xadd(stream, fields, id=f"{ms}-{number}")
        if number % 997 == 0:
            sample.append(entry)
        if len(pipe) >= 5000:
            await pipe.execute()
    await pipe.execute()
    return sample


async def memory_by_family(redis: aioredis.Redis) -> dict[str, tuple[int, int]]:
    """Key count and bytes per key family (`ix:ip`, `agg:m`, `requests`, ...)."""
    families: dict[str, tuple[int, int]] = {}
    batch: list[str] = []

    async def measure() -> None:
        async with redis.pipeline(transaction=False) as pipe:
            for key in batch:
                pipe.memory_usage(key, samples=0)
            sizes = await pipe.execute()
        for key, size in zip(batch, sizes, strict=True):
            parts = key.removeprefix(keys.LOG_TAG + ":").split(":")
            two_part = ("ix", "agg", "uip", "uus", "agg-hosts", "agg-all", "uip-all", "uus-all")
            family = ":".join(parts[:2]) if parts[0] in two_part else parts[0]
            if parts[0] in ("top", "top-all"):
                family = ":".join(parts[:3])
            count, total = families.get(family, (0, 0))
            families[family] = (count + 1, total + int(size or 0))
        batch.clear()

    async for key in redis.scan_iter(count=2000):
        batch.append(key)
        if len(batch) >= 5000:
            await measure()
    if batch:
        await measure()
    return families


def cpu_seconds(info: dict[str, Any]) -> float:
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def timed(samples: int, run: Callable[[int], Awaitable[object]]) -> tuple[float, float]:
    durations = []
    for index in range(samples):
        started = time.perf_counter()
        await run(index)
        durations.append((time.perf_counter() - started) * 1000)
    durations.sort()
    return statistics.median(durations), durations[int(len(durations) * 0.95) - 1]


@dataclass
class LogIndexResult:
    """What one run measured (`just bench` reports it beside the proxies; `just bench-logs` prints it)."""

    entries: int
    hosts: int
    indexer_entries_per_second: float = 0.0
    stream_mib_per_million: float = 0.0
    total_mib_per_million: float = 0.0
    search_ms: dict[str, tuple[float, float]] = field(default_factory=dict)  # shape -> (p50, p95)
    stats_ms: dict[str, tuple[float, float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def bench(args: argparse.Namespace, out: Callable[[str], None] = print) -> LogIndexResult:
    """One run at args.entries / args.hosts / args.samples / args.batch; every line goes to `out`."""
    result = LogIndexResult(args.entries, args.hosts)
    workdir = Path(tempfile.mkdtemp(prefix="mhp-log-bench-"))
    server = start_redis(workdir)
    redis = aioredis.Redis.from_url(server.url, password=server.password, decode_responses=True)
    try:
        hosts = [f"svc{n}.example.com" for n in range(args.hosts)]
        now = time.time()
        base = int((await redis.info("memory"))["used_memory"])
        started = time.perf_counter()
        sample = await fill(redis, args.entries, hosts, now)
        out(f"wrote {args.entries:,} entries over the last 24 h in {time.perf_counter() - started:.1f} s")
        stream_bytes = int((await redis.info("memory"))["used_memory"]) - base

        indexer = LogIndexer(
            redis,
            minute_ttl_seconds=2 * DAY_SECONDS,
            hour_ttl_seconds=35 * DAY_SECONDS,
            request_id_ttl_seconds=8 * DAY_SECONDS,
            batch_size=args.batch,
            name="bench",
        )
        redis_cpu = cpu_seconds(await redis.info("cpu"))
        own_cpu = time.process_time()
        started = time.perf_counter()
        while await indexer.run_once(block=False):
            pass
        wall = time.perf_counter() - started
        own_cpu = time.process_time() - own_cpu
        redis_cpu = cpu_seconds(await redis.info("cpu")) - redis_cpu
        assert indexer.counted == args.entries, indexer.counted
        result.indexer_entries_per_second = args.entries / wall
        out(
            f"indexer: {args.entries / wall:,.0f} entries/s ({wall:.1f} s wall, batch {args.batch}); "
            f"CPU: indexer process {own_cpu:.1f} s ({args.entries / own_cpu:,.0f} entries per CPU-second), "
            f"redis-server {redis_cpu:.1f} s ({args.entries / redis_cpu:,.0f} entries per CPU-second)"
        )
        total_bytes = int((await redis.info("memory"))["used_memory"]) - base
        per_million = 1_000_000 / args.entries / 2**20
        result.stream_mib_per_million = stream_bytes * per_million
        result.total_mib_per_million = total_bytes * per_million
        out(
            f"memory per 1M entries: stream {stream_bytes * per_million:,.0f} MiB, "
            f"indexes+aggregates {(total_bytes - stream_bytes) * per_million:,.0f} MiB, "
            f"total {total_bytes * per_million:,.0f} MiB"
        )

        out("memory by key family (MEMORY USAGE of every key):")
        for family, (count, size) in sorted((await memory_by_family(redis)).items(), key=lambda i: -i[1][1]):
            out(f"  {family:<16} {count:>9,} keys {size * per_million:>8,.1f} MiB per 1M entries")

        searcher = LogSearch(redis, scan_limit=20_000)
        rng = random.Random(7)
        day = (now - DAY_SECONDS, now + 1)
        hour = (now - 3600, now + 1)
        owned = HostScope.of(
            "tenant", {host: ("tenant" if n < 3 else "other") for n, host in enumerate(hosts)}
        )

        def pick() -> RequestLogEntry:
            return rng.choice(sample)

        shapes: dict[str, Callable[[int], LogFilter]] = {
            "admin, last hour, no filter": lambda _i: LogFilter(*hour),
            "host, last hour": lambda _i: LogFilter(*hour, host=pick().host),
            "host + status 5xx, 24 h": lambda _i: LogFilter(
                *day, host=pick().host, status=StatusFilter(None, 5)
            ),
            "user, 24 h": lambda _i: LogFilter(*day, user=f"user{rng.randrange(2000)}"),
            "client IP, 24 h": lambda _i: LogFilter(*day, client_ip=pick().client_ip),
            "tool + 4xx, 24 h": lambda _i: LogFilter(
                *day, tool=rng.choice(TOOLS), status=StatusFilter(None, 4)
            ),
            "errors, 24 h": lambda _i: LogFilter(*day, errors=True),
            "request id, 24 h": lambda _i: LogFilter(*day, request_id=pick().request_id),
            "tenant (3 proxies), 24 h": lambda _i: LogFilter(*day, scope=owned),
            "tenant + path prefix, 24 h": lambda _i: LogFilter(*day, scope=owned, path_prefix="/api/items/1"),
        }
        out(f"search, limit 50, {args.samples} runs each (ms):")
        for name, make in shapes.items():
            found: list[int] = []

            async def one(
                index: int, make: Callable[[int], LogFilter] = make, found: list[int] = found
            ) -> None:
                page = await searcher.search(make(index), limit=50)
                found.append(len(page.items))

            p50, p95 = await timed(args.samples, one)
            result.search_ms[name] = (p50, p95)
            out(f"  {name:<30} p50 {p50:7.2f}  p95 {p95:7.2f}   (avg {statistics.mean(found):.0f} hits)")

        stats = LogStats(
            redis, minute_retention_seconds=2 * DAY_SECONDS, hour_retention_seconds=35 * DAY_SECONDS
        )
        everything = HostScope.of("tenant", dict.fromkeys(hosts, "tenant"))
        out(f"stats, {args.samples} runs each (ms):")
        for name, make_request in {
            STATS_ONE_HOST: lambda _i: StatsRequest(*day, "hour", 5, rng.choice(hosts), None),
            STATS_EVERY_HOST: lambda _i: StatsRequest(*day, "hour", 5, None, None),
            "tenant (3 proxies), a day by hour": lambda _i: StatsRequest(*day, "hour", 5, None, owned),
            f"tenant (all {len(hosts)}), a day by hour": lambda _i: StatsRequest(
                *day, "hour", 5, None, everything
            ),
            "one host, an hour by minute": lambda _i: StatsRequest(
                *hour, "minute", 5, rng.choice(hosts), None
            ),
        }.items():

            async def run_stats(
                index: int, make_request: Callable[[int], StatsRequest] = make_request
            ) -> None:
                await stats.stats(make_request(index))

            p50, p95 = await timed(args.samples, run_stats)
            result.stats_ms[name] = (p50, p95)
            out(f"  {name:<34} p50 {p50:7.2f}  p95 {p95:7.2f}")
    finally:
        await redis.aclose()
        server.service.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--batch", type=int, default=1000)
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
