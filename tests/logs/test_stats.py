"""Stats over several proxies against a real redis-server, on entries written by the data plane's own writer
and indexed by the indexer: the answer over every proxy (read from the indexer's cross-proxy aggregates) and
over a token's own proxies (summed in Redis) give the numbers the per-proxy answers add up to, a retried
batch counts once there too, and every aggregate key expires with the rest."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import redis.asyncio as aioredis

from control_plane.logs.entries import LATENCY_BOUNDS_MS, percentile_ms
from control_plane.logs.indexer import TOP_MAX
from control_plane.logs.query import HostScope
from control_plane.logs.stats import LogStats, StatsRequest
from data_plane.request_log import RequestLogEntry
from shared import keys

from .test_indexer import STREAM, drain, indexer, write

HOSTS = ["a.example.com", "b.example.com", "c.example.com"]
ADDITIVE = ("requests", "status", "bytes_in", "bytes_out")
MINUTE_TTL_SECONDS = 3600  # what test_indexer.indexer() gives the indexer
HOUR_TTL_SECONDS = 86400


def varied(number: int) -> RequestLogEntry:
    """Entries that differ by proxy, status, size, latency, path, user and client IP."""
    return RequestLogEntry(
        time=time.time(),
        client_ip=f"198.51.100.{number % 11}",
        host=HOSTS[number % 3],
        method="POST",
        path=f"/mcp/{number % 4}?token=x",
        status=(200, 200, 201, 302, 404, 401, 500, 503)[number % 8],
        bytes_in=100 + number,
        bytes_out=1000 + 7 * number,
        duration_seconds=0.0007 * (number % 97) ** 1.5,
        upstream="http://127.0.0.1:3000",
        route_id="",
        request_id=f"stats-{number:06d}",
        user=f"user{number % 5}" if number % 6 else "",
    )


def stats_of(redis: aioredis.Redis) -> LogStats:
    return LogStats(
        redis, minute_retention_seconds=MINUTE_TTL_SECONDS, hour_retention_seconds=HOUR_TTL_SECONDS
    )


async def answer(
    redis: aioredis.Redis, *, host: str | None = None, scope: HostScope | None = None, bucket: str = "hour"
) -> dict[str, Any]:
    now = time.time()
    granularity: Any = bucket
    return await stats_of(redis).stats(StatsRequest(now - 3000, now + 60, granularity, 10, host, scope))


def summed(sections: list[dict[str, Any]]) -> dict[str, Any]:
    """The additive numbers of several proxies' totals, added up."""
    out: dict[str, Any] = {"requests": 0, "bytes_in": 0, "bytes_out": 0, "status": {}}
    for totals in sections:
        for name in ("requests", "bytes_in", "bytes_out"):
            out[name] += totals[name]
        for klass, count in totals["status"].items():
            out["status"][klass] = out["status"].get(klass, 0) + count
    return out


def top_sums(sections: list[dict[str, Any]], field: str) -> dict[str, int]:
    sums: dict[str, int] = {}
    for totals in sections:
        for row in totals[field]:
            sums[row["value"]] = sums.get(row["value"], 0) + row["count"]
    return sums


def without_tops(by_host: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        host: {k: v for k, v in totals.items() if not k.startswith("top_")}
        for host, totals in by_host.items()
    }


def latency(entries: list[RequestLogEntry]) -> dict[str, float | None]:
    """The percentiles the histogram of these entries gives (the indexer's bucketing, done here by hand)."""
    histogram = [0] * (len(LATENCY_BOUNDS_MS) + 1)
    for item in entries:
        ms = item.duration_seconds * 1000
        bounds = enumerate(LATENCY_BOUNDS_MS)
        histogram[next((n for n, bound in bounds if ms <= bound), len(LATENCY_BOUNDS_MS))] += 1
    return {f"p{p}": percentile_ms(histogram, p / 100) for p in (50, 95, 99)}


async def test_every_proxy_together_is_the_sum_of_each_proxy(redis_client: aioredis.Redis) -> None:
    entries = [varied(n) for n in range(300)]
    await write(redis_client, entries)
    await drain(indexer(redis_client, "a"))

    one_by_one = {host: (await answer(redis_client, host=host))["proxies"][0]["totals"] for host in HOSTS}
    everyone = await answer(redis_client)
    together = everyone["all"]["totals"]
    expected = summed(list(one_by_one.values()))
    assert expected["requests"] == 300
    assert {name: together[name] for name in ADDITIVE} == expected
    assert {name: together["latency_ms"][name] for name in ("p50", "p95", "p99")} == latency(entries)
    assert together["unique_ips"] == 11 and together["unique_users"] == 5
    for field in ("top_paths", "top_users", "top_tools"):
        assert {row["value"]: row["count"] for row in together[field]} == top_sums(
            list(one_by_one.values()), field
        ), field
    # The per-proxy sections of the every-proxy answer are the one-proxy answers' totals (top lists aside).
    assert {proxy["host"]: proxy["totals"] for proxy in everyone["proxies"]} == without_tops(one_by_one)
    # Bucket by bucket too (minutes: the entries may straddle one).
    by_minute = await answer(redis_client, bucket="minute")
    rows = {row["start"]: row["requests"] for row in by_minute["all"]["buckets"]}
    expected_rows: dict[int, int] = {}
    for host in HOSTS:
        for row in (await answer(redis_client, host=host, bucket="minute"))["proxies"][0]["buckets"]:
            expected_rows[row["start"]] = expected_rows.get(row["start"], 0) + row["requests"]
    assert rows == expected_rows

    # A token owning every proxy with traffic gets the admin's answer (read from the same cross-proxy keys).
    owner_of_all = HostScope.of("alice", dict.fromkeys(HOSTS, "alice"))
    assert (await answer(redis_client, scope=owner_of_all))["all"] == everyone["all"]
    # A token owning two of the three: its `all` is those two summed in Redis, and nothing of the third.
    scope = HostScope.of("alice", {HOSTS[0]: "alice", HOSTS[1]: "alice", HOSTS[2]: "bob"})
    mine = await answer(redis_client, scope=scope)
    assert [proxy["host"] for proxy in mine["proxies"]] == HOSTS[:2]
    own = [one_by_one[host] for host in HOSTS[:2]]
    assert {name: mine["all"]["totals"][name] for name in ADDITIVE} == summed(own)
    assert {proxy["host"]: proxy["totals"] for proxy in mine["proxies"]} == without_tops(
        {h: one_by_one[h] for h in HOSTS[:2]}
    )
    assert mine["all"]["totals"]["top_paths"] and {
        row["value"]: row["count"] for row in mine["all"]["totals"]["top_paths"]
    } == top_sums(own, "top_paths")
    own_entries = [item for item in entries if item.host in HOSTS[:2]]
    assert mine["all"]["totals"]["latency_ms"]["p95"] == latency(own_entries)["p95"]
    assert mine["all"]["totals"]["unique_ips"] == len({item.client_ip for item in own_entries})
    assert sum(row["requests"] for row in mine["all"]["buckets"]) == len(own_entries)


async def test_buckets_indexed_before_the_cross_proxy_keys_are_summed_from_each_proxy(
    redis_client: aioredis.Redis,
) -> None:
    """After an upgrade, buckets an older indexer filled have per-proxy keys only: `all` still counts them."""
    await write(redis_client, [varied(n) for n in range(90)])
    await drain(indexer(redis_client, "a"))
    expected = await answer(redis_client)
    async for key in redis_client.scan_iter(match=f"{keys.LOG_TAG}:*-all:*"):
        await redis_client.delete(key)
    assert not await redis_client.exists(keys.log_aggregate_all("h", int(time.time() // 3600)))
    assert (await answer(redis_client))["all"] == expected["all"]


async def test_a_retried_batch_counts_once_over_every_proxy(redis_client: aioredis.Redis) -> None:
    await write(redis_client, [varied(n) for n in range(120)])
    consumer = indexer(redis_client, "a")
    await drain(consumer)
    first = await answer(redis_client)
    assert first["all"]["totals"]["requests"] == 120

    # The same entries again (a retried batch, a claim racing a slow replica), and a copy the data plane's
    # at-least-once writer appended again (same request id, new stream id): the cross-proxy totals hold.
    everything = [entry_id for entry_id, _ in await redis_client.xrange(STREAM)]
    assert await consumer.index_ids(everything[:50]) == 50
    assert await consumer.index_ids(everything) == 120
    await write(redis_client, [varied(7)])
    await drain(consumer)
    assert consumer.counted == 120
    again = await answer(redis_client)
    assert (again["all"], again["proxies"]) == (first["all"], first["proxies"])
    assert sum(proxy["totals"]["requests"] for proxy in again["proxies"]) == 120


async def test_a_union_of_thousands_of_buckets_is_counted_whole(redis_client: aioredis.Redis) -> None:
    """Past 4,000 HyperLogLogs (Lua's unpack bound) the sum script merges in parts: same counts."""
    now_ms = int(time.time() * 1000)
    start_ms = now_ms - 350 * 60_000
    hosts = [f"h{n}.example.com" for n in range(12)]
    number = 0
    async with redis_client.pipeline(transaction=False) as pipe:
        for minute in range(345):
            for host in hosts:
                item = varied(number)
                fields: Any = {
                    **item.to_stream_fields(),
                    "host": host,
                    "client_ip": f"192.0.2.{number % 9}",
                }
                pipe.xadd(STREAM, fields, id=f"{start_ms + minute * 60_000}-{number}")
                number += 1
        await pipe.execute()
    await drain(indexer(redis_client, "a"))
    scope = HostScope.of("alice", dict.fromkeys(hosts, "alice"))
    now = time.time()
    stats = LogStats(redis_client, minute_retention_seconds=86400, hour_retention_seconds=86400)
    mine = await stats.stats(StatsRequest(now - 6 * 3600, now + 60, "minute", 5, None, scope))
    assert mine["all"]["totals"]["requests"] == number == 4140
    assert mine["all"]["totals"]["unique_ips"] == 9
    assert len(mine["proxies"]) == 12
    assert not await redis_client.exists(keys.log_stats_scratch())


async def test_every_aggregate_key_expires_with_its_proxys(redis_client: aioredis.Redis) -> None:
    await write(redis_client, [varied(n) for n in range(60)])
    await drain(indexer(redis_client, "a"))
    families = {"agg", "uip", "uus", "top", "agg-hosts", "rid"}
    families |= {family + "-all" for family in ("agg", "uip", "uus", "top")}
    seen: set[str] = set()
    async for key in redis_client.scan_iter(match=f"{keys.LOG_TAG}:*"):
        family = key.removeprefix(f"{keys.LOG_TAG}:").split(":")[0]
        if key == STREAM or family in ("ix", "ix-keys"):
            continue  # the stream and its indexes: trimmed by retention (test_indexer)
        assert family in families, key
        seen.add(family)
        ttl = await redis_client.ttl(key)
        granularity = key.split(":")[3 if family.startswith("top") else 2]
        if family == "rid":
            assert 0 < ttl <= 86400, key
        else:
            assert 0 < ttl <= {"m": MINUTE_TTL_SECONDS, "h": HOUR_TTL_SECONDS}[granularity], (key, ttl)
    assert seen == families
    # A cross-proxy bucket lives exactly as long as the proxies' buckets it adds up.
    first_id = (await redis_client.xrange(STREAM, count=1))[0][0]
    hour = int(first_id.split("-")[0]) // 3_600_000
    for all_key, own_key in (
        (keys.log_aggregate_all("h", hour), keys.log_aggregate("h", HOSTS[0], hour)),
        (keys.log_top_all("path", "h", hour), keys.log_top("path", "h", HOSTS[0], hour)),
        (keys.log_unique_ips_all("h", hour), keys.log_unique_ips("h", HOSTS[0], hour)),
    ):
        assert abs(await redis_client.ttl(all_key) - await redis_client.ttl(own_key)) <= 1


async def test_top_sets_stay_compact_and_keep_the_frequent_values(redis_client: aioredis.Redis) -> None:
    """However many distinct values a bucket sees, its top set never passes TOP_MAX members, so Redis keeps
    it in the listpack encoding (a skiplist, once made, stays one); the frequent values keep exact counts."""
    frequent = [varied(n) for n in range(200)]  # paths /mcp/0../mcp/3, 50 each
    rare = [dataclasses.replace(varied(1000 + n), path=f"/rare/{n}", host=HOSTS[0]) for n in range(400)]
    await write(redis_client, frequent[:100] + rare + frequent[100:])
    await drain(indexer(redis_client, "a"))
    first_id = (await redis_client.xrange(STREAM, count=1))[0][0]
    hour = int(first_id.split("-")[0]) // 3_600_000
    for key in (keys.log_top("path", "h", HOSTS[0], hour), keys.log_top_all("path", "h", hour)):
        assert await redis_client.zcard(key) <= TOP_MAX, key
        assert await redis_client.object("encoding", key) == "listpack", key
    together = (await answer(redis_client))["all"]["totals"]["top_paths"]
    assert together[:4] == [{"value": f"/mcp/{n}", "count": 50} for n in range(4)]
