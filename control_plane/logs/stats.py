"""Log stats from the indexer's aggregates: per proxy and per minute or hour bucket, requests, status
classes, latency percentiles (from a fixed histogram, so approximate within a bucket's bounds), bytes,
unique client IPs and users (HyperLogLog, about 0.8% standard error) and top paths, users and MCP tools
(each bucket keeps its TOP_KEEP-TOP_MAX most frequent values, and a range sums each bucket's top 4 x `top`, so
rare values are approximate; the frequent ones are exact).

Buckets are aligned to UTC minutes/hours; every bucket that overlaps the range is reported whole. Only
buckets with traffic are listed. `all` is every proxy in scope together: totals (with the top lists) and
buckets. `proxies` has one section per proxy with traffic: its totals; when one host is asked for, also its
buckets and top lists (per bucket and over the range). Over several proxies the top lists are those of all
of them together: per proxy, thousands of small lists would cost more than the rest of the answer.

How each answer is read (its cost is the keys it reads and what Redis sends back):
- one host: two pipelined round trips over that proxy's buckets;
- every proxy (the admin): `all` from the indexer's cross-proxy aggregates (one hash, two HyperLogLogs and
  three top sets per bucket), and the per-proxy totals summed inside Redis by one script (SUM_SCRIPT);
- the proxies a token owns: the same script also sums `all` over those proxies, bucket by bucket.
"""

from __future__ import annotations

import asyncio
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

# Sums the aggregates of several proxies inside Redis, so a many-proxy answer is one reply instead of a
# few thousand. KEYS[1] a scratch key for unions too large for one PFCOUNT. ARGV: key prefix, granularity,
# top, depth, 1 to sum `all` bucket by bucket too (a token's own proxies; the admin's comes from the
# cross-proxy keys), the number of buckets, the buckets, the hosts. Returns {proxies, all}: proxies =
# {host, counters, unique ips, unique users} per host with traffic; all = {} or
# {counters, unique ips, unique users, tops x3, {bucket, counters, ips, users} per bucket with traffic}.
# Counters are flat field/value lists, tops flat value/count lists (numbers as decimal strings).
SUM_SCRIPT = """
local P, g, top, depth, with_all = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5] == '1'
local nbuckets = tonumber(ARGV[6])
local buckets, hosts = {}, {}
for i = 7, 6 + nbuckets do buckets[#buckets + 1] = ARGV[i] end
for i = 7 + nbuckets, #ARGV do hosts[#hosts + 1] = ARGV[i] end
local DIMENSIONS = {'path', 'user', 'tool'}
local function add(into, flat)
  for i = 1, #flat, 2 do into[flat[i]] = (into[flat[i]] or 0) + tonumber(flat[i + 1]) end
end
local function flat(t)
  local out = {}
  for field, n in pairs(t) do out[#out + 1] = field; out[#out + 1] = string.format('%.0f', n) end
  return out
end
-- PFCOUNT of a union; past a few thousand keys (Lua's unpack limit) merged in parts into a scratch key.
local function union(names)
  if #names == 0 then return 0 end
  if #names <= 4000 then return redis.call('PFCOUNT', unpack(names)) end
  local scratch = KEYS[1]
  redis.call('DEL', scratch)
  for first = 1, #names, 4000 do
    redis.call('PFMERGE', scratch, unpack(names, first, math.min(first + 3999, #names)))
  end
  local n = redis.call('PFCOUNT', scratch)
  redis.call('DEL', scratch)
  return n
end
local function ordered(sums)
  local rows = {}
  for value, count in pairs(sums) do rows[#rows + 1] = {value, count} end
  table.sort(rows, function(a, b) return a[2] > b[2] or (a[2] == b[2] and a[1] < b[1]) end)
  local out = {}
  for i = 1, math.min(top, #rows) do
    out[#out + 1] = rows[i][1]
    out[#out + 1] = string.format('%.0f', rows[i][2])
  end
  return out
end
local proxies = {}
local all_counters, all_ips, all_users, all_tops, by_bucket = {}, {}, {}, {{}, {}, {}}, {}
-- Top lists only for `all`: summing them per proxy too would cost more than the rest together.
for _, host in ipairs(hosts) do
  local counters, ips, users, filled = {}, {}, {}, false
  for _, b in ipairs(buckets) do
    local row = redis.call('HGETALL', P .. ':agg:' .. g .. ':' .. host .. ':' .. b)
    if #row > 0 then
      filled = true
      add(counters, row)
      local suffix = g .. ':' .. host .. ':' .. b
      ips[#ips + 1] = P .. ':uip:' .. suffix
      users[#users + 1] = P .. ':uus:' .. suffix
      if with_all then
        for d, dimension in ipairs(DIMENSIONS) do
          local key = P .. ':top:' .. dimension .. ':' .. suffix
          add(all_tops[d], redis.call('ZREVRANGE', key, 0, depth - 1, 'WITHSCORES'))
        end
        add(all_counters, row)
        all_ips[#all_ips + 1] = ips[#ips]
        all_users[#all_users + 1] = users[#users]
        local at = by_bucket[b]
        if not at then at = {counters = {}, ips = {}, users = {}}; by_bucket[b] = at end
        add(at.counters, row)
        at.ips[#at.ips + 1] = ips[#ips]
        at.users[#at.users + 1] = users[#users]
      end
    end
  end
  if filled then
    proxies[#proxies + 1] = {host, flat(counters), union(ips), union(users)}
  end
end
local all = {}
if with_all then
  local rows = {}
  for _, b in ipairs(buckets) do
    local at = by_bucket[b]
    if at then rows[#rows + 1] = {b, flat(at.counters), union(at.ips), union(at.users)} end
  end
  all = {flat(all_counters), union(all_ips), union(all_users),
    ordered(all_tops[1]), ordered(all_tops[2]), ordered(all_tops[3]), rows}
end
return {proxies, all}
"""


def _pairs(flat: list[Any]) -> list[tuple[str, float]]:
    return [(str(flat[i]), float(flat[i + 1])) for i in range(0, len(flat), 2)]


def _counters(flat: list[Any]) -> dict[str, int]:
    return {str(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}


def _with_tops(summary: dict[str, Any], flat_tops: list[list[Any]], top: int) -> dict[str, Any]:
    for dimension, flat in zip(TOP_DIMENSIONS, flat_tops, strict=True):
        summary[f"top_{dimension}s"] = _top(_pairs(flat), top)
    return summary


class LogStats:
    def __init__(
        self, redis: aioredis.Redis, *, minute_retention_seconds: int, hour_retention_seconds: int
    ) -> None:
        self._redis = redis
        self._retention = {"minute": minute_retention_seconds, "hour": hour_retention_seconds}
        self._top_of_buckets = redis.register_script(TOP_OF_BUCKETS_SCRIPT)
        self._sum = redis.register_script(SUM_SCRIPT)

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
        if request.host is not None:
            proxies = await self._one_proxy(request.host, g, width, buckets, request.top)
            everything = (
                {
                    "totals": proxies[0]["totals"],
                    "buckets": [_without_tops(row) for row in proxies[0]["buckets"]],
                }
                if proxies
                else _empty_section()
            )
        else:
            if request.scope is not None:
                proxies, everything = await self._summed(hosts, g, width, buckets, request.top, True)
            else:
                # Two independent reads: Redis answers one while this process parses the other.
                (proxies, _), everything = await asyncio.gather(
                    self._summed(hosts, g, width, buckets, request.top, False),
                    self._every_proxy(g, width, buckets, request.top),
                )
        return {
            "since": since,
            "until": request.until,
            "bucket": request.granularity,
            "bucket_seconds": width,
            "all": everything,
            "proxies": proxies,
        }

    async def _every_proxy(self, g: str, width: int, buckets: list[int], top: int) -> dict[str, Any]:
        """Every proxy together, from the indexer's cross-proxy aggregates: a few keys per bucket."""
        redis = self._redis
        async with redis.pipeline(transaction=False) as pipe:
            for bucket in buckets:
                pipe.hgetall(keys.log_aggregate_all(g, bucket))
                pipe.pfcount(keys.log_unique_ips_all(g, bucket))
                pipe.pfcount(keys.log_unique_users_all(g, bucket))
            pipe.pfcount(*[keys.log_unique_ips_all(g, b) for b in buckets])
            pipe.pfcount(*[keys.log_unique_users_all(g, b) for b in buckets])
            for dimension in TOP_DIMENSIONS:
                await self._top_of_buckets(
                    keys=[keys.log_top_all(dimension, g, b) for b in buckets],
                    args=[top, top * TOP_DEPTH_FACTOR],
                    client=pipe,
                )
            answers: list[Any] = await pipe.execute()
        rows = []
        totals: dict[str, int] = {}
        for number, bucket in enumerate(buckets):
            raw, unique_ips, unique_users = answers[3 * number : 3 * number + 3]
            if not raw:
                continue
            counters = {k: int(v) for k, v in raw.items()}
            for name, value in counters.items():
                totals[name] = totals.get(name, 0) + value
            rows.append(
                {
                    "start": bucket * width,
                    **_summary(counters, _histogram(counters), unique_ips, unique_users),
                }
            )
        unique_ips, unique_users, *flat_tops = answers[3 * len(buckets) :]
        summary = _summary(totals, _histogram(totals), unique_ips, unique_users)
        return {"totals": _with_tops(summary, flat_tops, top), "buckets": rows}

    async def _summed(
        self, hosts: list[str], g: str, width: int, buckets: list[int], top: int, with_all: bool
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Per-proxy totals of `hosts` (and, with_all, their sum bucket by bucket), summed inside Redis."""
        if not hosts:
            return [], _empty_section()
        reply: Any = await self._sum(
            keys=[keys.log_stats_scratch()],
            args=[
                keys.LOG_TAG,
                g,
                top,
                top * TOP_DEPTH_FACTOR,
                1 if with_all else 0,
                len(buckets),
                *buckets,
                *hosts,
            ],
        )
        per_proxy, summed = reply
        proxies = []
        for host, flat_counters, unique_ips, unique_users in per_proxy:
            counters = _counters(flat_counters)
            summary = _summary(counters, _histogram(counters), unique_ips, unique_users)
            proxies.append({"host": str(host), "totals": summary})
        if not summed:
            return proxies, _empty_section()
        flat_counters, unique_ips, unique_users, *flat_tops, bucket_rows = summed
        counters = _counters(flat_counters)
        totals = _with_tops(
            _summary(counters, _histogram(counters), unique_ips, unique_users), flat_tops, top
        )
        rows = []
        for bucket, flat_bucket, bucket_ips, bucket_users in bucket_rows:
            at = _counters(flat_bucket)
            rows.append(
                {"start": int(bucket) * width, **_summary(at, _histogram(at), bucket_ips, bucket_users)}
            )
        return proxies, {"totals": totals, "buckets": rows}

    async def _one_proxy(
        self, host: str, g: str, width: int, buckets: list[int], top: int
    ) -> list[dict[str, Any]]:
        """One proxy's totals and buckets (with each bucket's top lists): two pipelined round trips."""
        redis = self._redis
        async with redis.pipeline(transaction=False) as pipe:
            for bucket in buckets:
                pipe.hgetall(keys.log_aggregate(g, host, bucket))
            rows: list[dict[str, str]] = await pipe.execute()
        filled = [
            (bucket, {k: int(v) for k, v in raw.items()})
            for bucket, raw in zip(buckets, rows, strict=True)
            if raw
        ]
        if not filled:
            return []
        async with redis.pipeline(transaction=False) as pipe:
            for bucket, _counters in filled:
                pipe.pfcount(keys.log_unique_ips(g, host, bucket))
                pipe.pfcount(keys.log_unique_users(g, host, bucket))
                for dimension in TOP_DIMENSIONS:
                    pipe.zrevrange(keys.log_top(dimension, g, host, bucket), 0, top - 1, withscores=True)
            numbers = [bucket for bucket, _ in filled]
            pipe.pfcount(*[keys.log_unique_ips(g, host, b) for b in numbers])
            pipe.pfcount(*[keys.log_unique_users(g, host, b) for b in numbers])
            for dimension in TOP_DIMENSIONS:
                await self._top_of_buckets(
                    keys=[keys.log_top(dimension, g, host, b) for b in numbers],
                    args=[top, top * TOP_DEPTH_FACTOR],
                    client=pipe,
                )
            answers: list[Any] = await pipe.execute()
        bucket_rows = []
        totals: dict[str, int] = {}
        width_of_row = 2 + len(TOP_DIMENSIONS)
        for number, (bucket, counters) in enumerate(filled):
            unique_ips, unique_users, *tops = answers[number * width_of_row : (number + 1) * width_of_row]
            for name, value in counters.items():
                totals[name] = totals.get(name, 0) + value
            row = {
                "start": bucket * width,
                **_summary(counters, _histogram(counters), unique_ips, unique_users),
            }
            for dimension, top_rows in zip(TOP_DIMENSIONS, tops, strict=True):
                row[f"top_{dimension}s"] = _top(top_rows, top)
            bucket_rows.append(row)
        unique_ips, unique_users, *flat_tops = answers[len(filled) * width_of_row :]
        total = _with_tops(_summary(totals, _histogram(totals), unique_ips, unique_users), flat_tops, top)
        return [{"host": host, "totals": total, "buckets": bucket_rows}]

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


def _without_tops(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not k.startswith("top_")}


def _empty_section() -> dict[str, Any]:
    summary = _summary({}, _histogram({}), 0, 0)
    return {"totals": {**summary, **{f"top_{d}s": [] for d in TOP_DIMENSIONS}}, "buckets": []}
