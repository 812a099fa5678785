"""Log stats from the indexer's aggregates: per proxy and per minute or hour bucket, requests, status
classes, latency percentiles (from a fixed histogram, so approximate within a bucket's bounds), bytes,
unique client IPs and users (HyperLogLog, about 0.8% standard error) and top paths, users and MCP tools
(each bucket keeps its TOP_KEEP most frequent values, and a range sums each bucket's top 4 x `top`, so
rare values are approximate; the frequent ones are exact).

Buckets are aligned to UTC minutes/hours; every bucket that overlaps the range is reported whole. Only
buckets with traffic are listed; per-bucket top lists only when one host is asked for (the totals of the
range always carry them). Two pipelined round trips answer a request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as aioredis

from shared import keys

from .entries import LATENCY_BOUNDS_MS, percentile_ms
from .query import HostScope, invalid

Granularity = Literal["minute", "hour"]
_SECONDS = {"minute": 60, "hour": 3600}
_SHORT = {"minute": "m", "hour": "h"}
MAX_LOOKUPS = 20_000  # host x bucket pairs one request may read
AUTO_MINUTE_MAX_SECONDS = 6 * 3600
TOP_DIMENSIONS = ("path", "user", "tool")


@dataclass(frozen=True, slots=True)
class StatsRequest:
    since: float
    until: float
    granularity: Granularity
    top: int
    host: str | None
    scope: HostScope | None  # None: the admin, every host


def pick_granularity(text: str, since: float, until: float) -> Granularity:
    if text == "minute" or text == "hour":
        return text
    if text != "auto":
        raise invalid("bucket", "expected minute, hour or auto")
    return "minute" if until - since <= AUTO_MINUTE_MAX_SECONDS else "hour"


def _summary(
    counters: dict[str, int], histogram: list[int], unique_ips: int, unique_users: int
) -> dict[str, Any]:
    requests = counters.get("n", 0)
    return {
        "requests": requests,
        "status": {f"{digit}xx": counters.get(f"s{digit}", 0) for digit in range(1, 6)},
        "bytes_in": counters.get("bin", 0),
        "bytes_out": counters.get("bout", 0),
        "latency_ms": {
            "avg": round(counters.get("lat", 0) / requests / 1000, 3) if requests else None,
            "p50": percentile_ms(histogram, 0.50),
            "p95": percentile_ms(histogram, 0.95),
            "p99": percentile_ms(histogram, 0.99),
        },
        "unique_ips": unique_ips,
        "unique_users": unique_users,
    }


def _histogram(counters: dict[str, int]) -> list[int]:
    return [counters.get(f"h{index}", 0) for index in range(len(LATENCY_BOUNDS_MS) + 1)]


def _top(rows: list[tuple[str, float]], top: int) -> list[dict[str, Any]]:
    ordered = sorted(rows, key=lambda row: (-row[1], row[0]))[:top]
    return [{"value": value, "count": int(count)} for value, count in ordered]


# KEYS: the per-bucket top zsets of one dimension. ARGV[1] how many, ARGV[2] how deep to read each bucket.
# Sums each bucket's top ARGV[2] values in Redis and returns the top ARGV[1] (flat value, count pairs): exact
# for every value that is within that depth in each bucket it appears in, which the frequent ones are.
TOP_OF_BUCKETS_SCRIPT = """
local sums = {}
for _, key in ipairs(KEYS) do
  local rows = redis.call('ZREVRANGE', key, 0, tonumber(ARGV[2]) - 1, 'WITHSCORES')
  for i = 1, #rows, 2 do sums[rows[i]] = (sums[rows[i]] or 0) + tonumber(rows[i + 1]) end
end
local ordered = {}
for value, count in pairs(sums) do ordered[#ordered + 1] = {value, count} end
table.sort(ordered, function(a, b) return a[2] > b[2] or (a[2] == b[2] and a[1] < b[1]) end)
local out = {}
for i = 1, math.min(tonumber(ARGV[1]), #ordered) do
  out[#out + 1] = ordered[i][1]
  out[#out + 1] = tostring(ordered[i][2])
end
return out
"""
TOP_DEPTH_FACTOR = 4


def _pairs(flat: list[Any]) -> list[tuple[str, float]]:
    return [(str(flat[i]), float(flat[i + 1])) for i in range(0, len(flat), 2)]


class LogStats:
    def __init__(
        self, redis: aioredis.Redis, *, minute_retention_seconds: int, hour_retention_seconds: int
    ) -> None:
        self._redis = redis
        self._retention = {"minute": minute_retention_seconds, "hour": hour_retention_seconds}
        self._top_of_buckets = redis.register_script(TOP_OF_BUCKETS_SCRIPT)

    async def stats(self, request: StatsRequest) -> dict[str, Any]:
        g = _SHORT[request.granularity]
        width = _SECONDS[request.granularity]
        # Nothing older than the aggregates' retention exists: a range reaching further back starts there.
        since = max(request.since, request.until - self._retention[request.granularity] - width)
        buckets = list(range(int(since // width), int(request.until // width) + 1))
        hosts = await self._hosts(request, g, buckets)
        if len(hosts) * len(buckets) > MAX_LOOKUPS:
            raise invalid(
                "bucket",
                f"{len(hosts)} proxies x {len(buckets)} buckets is too much for one answer: "
                "narrow the range, name a host, or use bucket=hour",
            )
        redis = self._redis
        # Top lists per bucket only for one proxy; for many, the range totals carry them (thousands of
        # small lists would cost more than everything else together).
        bucket_tops = request.host is not None
        async with redis.pipeline(transaction=False) as pipe:
            for host in hosts:
                for bucket in buckets:
                    pipe.hgetall(keys.log_aggregate(g, host, bucket))
            rows: list[dict[str, str]] = await pipe.execute()
        # Second round, only for the buckets with traffic: uniques, tops and the range totals.
        present: dict[str, list[tuple[int, dict[str, int]]]] = {}
        position = 0
        for host in hosts:
            for bucket in buckets:
                raw = rows[position]
                position += 1
                if raw:
                    present.setdefault(host, []).append((bucket, {k: int(v) for k, v in raw.items()}))
        async with redis.pipeline(transaction=False) as pipe:
            for host, filled in present.items():
                for bucket, _counters in filled:
                    pipe.pfcount(keys.log_unique_ips(g, host, bucket))
                    pipe.pfcount(keys.log_unique_users(g, host, bucket))
                    for dimension in TOP_DIMENSIONS if bucket_tops else ():
                        pipe.zrevrange(
                            keys.log_top(dimension, g, host, bucket), 0, request.top - 1, withscores=True
                        )
                numbers = [bucket for bucket, _ in filled]
                pipe.pfcount(*[keys.log_unique_ips(g, host, b) for b in numbers])
                pipe.pfcount(*[keys.log_unique_users(g, host, b) for b in numbers])
                for dimension in TOP_DIMENSIONS:
                    await self._top_of_buckets(
                        keys=[keys.log_top(dimension, g, host, b) for b in numbers],
                        args=[request.top, request.top * TOP_DEPTH_FACTOR],
                        client=pipe,
                    )
            answers: list[Any] = await pipe.execute()
        proxies = []
        position = 0
        for host, filled in present.items():
            bucket_rows = []
            totals: dict[str, int] = {}
            for bucket, counters in filled:
                width_of_row = 2 + (len(TOP_DIMENSIONS) if bucket_tops else 0)
                unique_ips, unique_users, *tops = answers[position : position + width_of_row]
                position += width_of_row
                for name, value in counters.items():
                    totals[name] = totals.get(name, 0) + value
                row = {
                    "start": bucket * width,
                    **_summary(counters, _histogram(counters), unique_ips, unique_users),
                }
                if bucket_tops:
                    for dimension, top_rows in zip(TOP_DIMENSIONS, tops, strict=True):
                        row[f"top_{dimension}s"] = _top(top_rows, request.top)
                bucket_rows.append(row)
            unique_ips, unique_users, *flat_tops = answers[position : position + 2 + len(TOP_DIMENSIONS)]
            position += 2 + len(TOP_DIMENSIONS)
            tops = [_pairs(flat) for flat in flat_tops]
            total = _summary(totals, _histogram(totals), unique_ips, unique_users)
            for dimension, top_rows in zip(TOP_DIMENSIONS, tops, strict=True):
                total[f"top_{dimension}s"] = _top(top_rows, request.top)
            proxies.append({"host": host, "totals": total, "buckets": bucket_rows})
        return {
            "since": since,
            "until": request.until,
            "bucket": request.granularity,
            "bucket_seconds": width,
            "proxies": proxies,
        }

    async def _hosts(self, request: StatsRequest, g: str, buckets: list[int]) -> list[str]:
        if request.host is not None:
            return [request.host]
        scope = request.scope
        if (
            scope is not None
            and not scope.owns_wildcards
            and len(scope.own_hosts) * len(buckets) <= MAX_LOOKUPS
        ):
            return scope.own_hosts
        async with self._redis.pipeline(transaction=False) as pipe:
            for bucket in buckets:
                pipe.smembers(keys.log_aggregate_hosts(g, bucket))
            seen: set[str] = set()
            for members in await pipe.execute():
                seen.update(members)
        return sorted(host for host in seen if scope is None or scope.allows(host))
