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
- several proxies: one script (SUM_SCRIPT) sums each proxy's totals inside Redis, and reads `all` from the
  indexer's cross-proxy aggregates (one hash, two HyperLogLogs and three top sets per bucket) for the admin,
  and for a token that owns every proxy with traffic in the range; for a token that owns some of them it
  sums `all` over its proxies, bucket by bucket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as aioredis

from shared import keys

from .entries import LATENCY_BOUNDS_MS, percentile_ms
from .query import HostScope, invalid

Granularity = Literal["minute", "hour"]
SumMode = Literal["cross", "owned", "sum"]  # how SUM_SCRIPT makes `all` (see there)
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

# Stats over several proxies in one script, so the answer is one reply instead of a few thousand. KEYS[1] a
# scratch key for unions too large for one PFCOUNT. ARGV: key prefix, granularity, top, depth, mode, the
# number of buckets, the buckets, the hosts (sorted). Per-proxy totals are summed from each host's buckets.
# `all` depends on the mode:
#   cross - read from the indexer's cross-proxy keys: a few per bucket however many proxies (the admin);
#           a bucket without them (indexed before they existed) is summed over its proxies instead;
#   owned - the same, when every host with traffic in these buckets is one of `hosts` (checked here, in the
#           same atomic script as the read, so no other owner's entry can be counted); else as `sum`;
#   sum   - summed over `hosts`, bucket by bucket (a token that owns some of the proxies with traffic).
# Returns {proxies, all}: proxies = {host, counters, unique ips, unique users} per host with traffic; all =
# {counters, unique ips, unique users, top paths, users, tools, {bucket, counters, ips, users} per bucket
# with traffic}. Counters are flat field/value lists, tops flat value/count lists (numbers as decimal text).
SUM_SCRIPT = """
local P, g, top, depth, mode = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
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
-- One bucket's numbers into a sum: its counters, the names of its HyperLogLogs, its tops' key names.
local function gather(sum, b, row, uip, uus, top_prefix, suffix)
  add(sum.counters, row)
  sum.ips[#sum.ips + 1] = uip
  sum.users[#sum.users + 1] = uus
  for d, dimension in ipairs(DIMENSIONS) do
    local key = top_prefix .. dimension .. ':' .. suffix
    add(sum.tops[d], redis.call('ZREVRANGE', key, 0, depth - 1, 'WITHSCORES'))
  end
  local at = sum.by_bucket[b]
  if not at then at = {counters = {}, ips = {}, users = {}}; sum.by_bucket[b] = at end
  add(at.counters, row)
  at.ips[#at.ips + 1] = uip
  at.users[#at.users + 1] = uus
end
local function summary(sum)
  local rows = {}
  for _, b in ipairs(buckets) do
    local at = sum.by_bucket[b]
    if at then rows[#rows + 1] = {b, flat(at.counters), union(at.ips), union(at.users)} end
  end
  return {flat(sum.counters), union(sum.ips), union(sum.users),
    ordered(sum.tops[1]), ordered(sum.tops[2]), ordered(sum.tops[3]), rows}
end
local function empty_sum()
  return {counters = {}, ips = {}, users = {}, tops = {{}, {}, {}}, by_bucket = {}}
end
if mode == 'owned' then
  local mine = {}
  for _, host in ipairs(hosts) do mine[host] = true end
  mode = 'cross'
  for _, b in ipairs(buckets) do
    for _, host in ipairs(redis.call('SMEMBERS', P .. ':agg-hosts:' .. g .. ':' .. b)) do
      if not mine[host] then mode = 'sum'; break end
    end
    if mode == 'sum' then break end
  end
end
local all, crossed = empty_sum(), {}
if mode == 'cross' then
  for _, b in ipairs(buckets) do
    local suffix = g .. ':' .. b
    local row = redis.call('HGETALL', P .. ':agg-all:' .. suffix)
    if #row > 0 then
      crossed[b] = true
      gather(all, b, row, P .. ':uip-all:' .. suffix, P .. ':uus-all:' .. suffix, P .. ':top-all:', suffix)
    end
  end
end
local proxies = {}
for _, host in ipairs(hosts) do
  local counters, ips, users = {}, {}, {}
  for _, b in ipairs(buckets) do
    local suffix = g .. ':' .. host .. ':' .. b
    local row = redis.call('HGETALL', P .. ':agg:' .. suffix)
    if #row > 0 then
      add(counters, row)
      ips[#ips + 1] = P .. ':uip:' .. suffix
      users[#users + 1] = P .. ':uus:' .. suffix
      -- A bucket an indexer from before the cross-proxy keys filled has none: summed from its proxies.
      if mode == 'sum' or not crossed[b] then
        gather(all, b, row, ips[#ips], users[#users], P .. ':top:', suffix)
      end
    end
  end
  if #ips > 0 then proxies[#proxies + 1] = {host, flat(counters), union(ips), union(users)} end
end
return {proxies, summary(all)}
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
            # The admin's `all` is the cross-proxy keys; a token's, too when it owns every proxy with traffic.
            mode: SumMode = "cross" if request.scope is None else "owned"
            proxies, everything = await self._summed(hosts, g, width, buckets, request.top, mode)
        return {
            "since": since,
            "until": request.until,
            "bucket": request.granularity,
            "bucket_seconds": width,
            "all": everything,
            "proxies": proxies,
        }

    async def _summed(
        self, hosts: list[str], g: str, width: int, buckets: list[int], top: int, mode: SumMode
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Per-proxy totals of `hosts` and `all` (SUM_SCRIPT's modes), in one script call."""
        if not hosts:
            return [], _empty_section()
        reply: Any = await self._sum(
            keys=[keys.log_stats_scratch()],
            args=[keys.LOG_TAG, g, top, top * TOP_DEPTH_FACTOR, mode, len(buckets), *buckets, *hosts],
        )
        per_proxy, (flat_counters, unique_ips, unique_users, *flat_tops, bucket_rows) = reply
        proxies = []
        for host, flat_host, host_ips, host_users in per_proxy:
            counters = _counters(flat_host)
            proxies.append(
                {"host": str(host), "totals": _summary(counters, _histogram(counters), host_ips, host_users)}
            )
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
