"""The request-log indexer: a consumer group on the data plane's stream that builds the query indexes and the
per-minute / per-hour aggregates (layout in shared/keys.py).

Every control-plane replica runs one consumer of LOG_INDEX_GROUP; XREADGROUP shares the entries out, and
entries a stopped replica left pending are taken over with XAUTOCLAIM after `claim_idle_seconds`.

A batch is one Lua script call (INDEX_SCRIPT) that indexes, aggregates and XACKs its entries atomically, so
an entry is either indexed and acknowledged or neither. It is also idempotent by entry: an entry counts only
when it is new to the request-id hash of its hour (HSETNX) and to its host's index (ZADD returns 1), checked
and incremented in the same script, so an entry delivered twice (a retried batch, a claim racing a slow
replica) never counts twice, and neither does a copy of an entry the data plane's at-least-once writer
appended again (same request id, new stream id).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError

from shared import keys

from ..stream_consumer import consumer_name
from .entries import latency_bucket, parse_entry, path_key, stream_id_ms

log = logging.getLogger(__name__)

TOP_KEEP: Final = 200  # members kept per top-N zset per bucket (the tail is approximate: see README)
ENTRY_WIDTH: Final = 16

# KEYS[1] the stream. ARGV: tag, group, minute TTL, hour TTL, top keep, request-id TTL, then ENTRY_WIDTH
# values per entry: id, ms, host, ip, user, client, mcp method, mcp tool, status class digit, bytes in,
# bytes out, latency us, histogram bucket, path key, request id, upstream-error flag. Returns how many
# entries it counted.
# Key names are built here with the formats of shared/keys.py (tests check the two agree).
INDEX_SCRIPT: Final = """
local P = ARGV[1]
local group = ARGV[2]
local ttl = {m = tonumber(ARGV[3]), h = tonumber(ARGV[4])}
local keep = tonumber(ARGV[5])
local rid_ttl = tonumber(ARGV[6])
local W = 16
local counted = 0
local ids = {}
local counters, uniques, tops, hosts, expiries, index_keys = {}, {}, {}, {}, {}, {}
local function bump(t, key, field, n)
  local row = t[key]
  if not row then row = {}; t[key] = row end
  row[field] = (row[field] or 0) + n
end
local function push(t, key, value)
  local row = t[key]
  if not row then row = {}; t[key] = row end
  row[#row + 1] = value
end
local function index(dimension, value, ms, id)
  if value ~= '' then
    local key = P .. ':ix:' .. dimension .. ':' .. value
    redis.call('ZADD', key, ms, id)
    index_keys[key] = true
  end
end
for i = 7, #ARGV, W do
  local id, ms, host, ip = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local user, client, mcp, tool = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7]
  local class, bin, bout, latency = ARGV[i + 8], ARGV[i + 9], ARGV[i + 10], ARGV[i + 11]
  local hbucket, path, rid, failed = ARGV[i + 12], ARGV[i + 13], ARGV[i + 14], ARGV[i + 15]
  ids[#ids + 1] = id
  local msn = tonumber(ms)
  local hour = math.floor(msn / 3600000)
  local fresh = true
  if rid ~= '' then
    local rkey = P .. ':rid:' .. hour
    if redis.call('HSETNX', rkey, rid, id) == 0 then
      fresh = false
    else
      expiries[rkey] = rid_ttl
    end
  end
  local hkey = P .. ':ix:host:' .. host
  if fresh and redis.call('ZADD', hkey, ms, id) == 1 then
    counted = counted + 1
    index_keys[hkey] = true
    index('ip', ip, ms, id)
    index('user', user, ms, id)
    index('client', client, ms, id)
    index('mcp', mcp, ms, id)
    index('tool', tool, ms, id)
    if class == '4' or class == '5' then index('class', class .. 'xx', ms, id) end
    if failed == '1' then index('err', '1', ms, id) end
    local buckets = {m = math.floor(msn / 60000), h = hour}
    for g, b in pairs(buckets) do
      local suffix = g .. ':' .. host .. ':' .. b
      local akey = P .. ':agg:' .. suffix
      bump(counters, akey, 'n', 1)
      bump(counters, akey, 's' .. class, 1)
      bump(counters, akey, 'bin', tonumber(bin))
      bump(counters, akey, 'bout', tonumber(bout))
      bump(counters, akey, 'lat', tonumber(latency))
      bump(counters, akey, 'h' .. hbucket, 1)
      expiries[akey] = ttl[g]
      if ip ~= '' then
        push(uniques, P .. ':uip:' .. suffix, ip); expiries[P .. ':uip:' .. suffix] = ttl[g]
      end
      if user ~= '' then
        push(uniques, P .. ':uus:' .. suffix, user); expiries[P .. ':uus:' .. suffix] = ttl[g]
        bump(tops, P .. ':top:user:' .. suffix, user, 1); expiries[P .. ':top:user:' .. suffix] = ttl[g]
      end
      bump(tops, P .. ':top:path:' .. suffix, path, 1); expiries[P .. ':top:path:' .. suffix] = ttl[g]
      if tool ~= '' then
        bump(tops, P .. ':top:tool:' .. suffix, tool, 1); expiries[P .. ':top:tool:' .. suffix] = ttl[g]
      end
      local hkeys = P .. ':agg-hosts:' .. g .. ':' .. b
      push(hosts, hkeys, host)
      expiries[hkeys] = ttl[g]
    end
  end
end
for key, row in pairs(counters) do
  for field, n in pairs(row) do redis.call('HINCRBY', key, field, n) end
end
local function chunked(command, key, values)
  for first = 1, #values, 1000 do
    redis.call(command, key, unpack(values, first, math.min(first + 999, #values)))
  end
end
for key, values in pairs(uniques) do chunked('PFADD', key, values) end
for key, values in pairs(hosts) do chunked('SADD', key, values) end
for key, row in pairs(tops) do
  for member, n in pairs(row) do redis.call('ZINCRBY', key, n, member) end
  if redis.call('ZCARD', key) > 2 * keep then redis.call('ZREMRANGEBYRANK', key, 0, -(keep + 1)) end
end
for key, seconds in pairs(expiries) do redis.call('EXPIRE', key, seconds) end
local names = {}
for key in pairs(index_keys) do names[#names + 1] = key end
if #names > 0 then chunked('SADD', P .. ':ix-keys', names) end
for first = 1, #ids, 1000 do
  redis.call('XACK', KEYS[1], group, unpack(ids, first, math.min(first + 999, #ids)))
end
return counted
"""
INDEX_SCRIPT_SHA1: Final = hashlib.sha1(INDEX_SCRIPT.encode()).hexdigest()


def script_arguments(entries: list[tuple[str, dict[str, str]]]) -> list[str]:
    """The per-entry ARGV values of INDEX_SCRIPT."""
    out: list[str] = []
    for entry_id, fields in entries:
        entry = parse_entry(entry_id, fields)
        out += (
            entry_id,
            str(stream_id_ms(entry_id)),
            entry.host,
            entry.client_ip,
            entry.user,
            entry.client_id,
            entry.mcp_method,
            entry.mcp_tool,
            str(entry.status // 100),
            str(entry.bytes_in),
            str(entry.bytes_out),
            str(int(entry.duration_seconds * 1_000_000)),
            str(latency_bucket(entry.duration_seconds)),
            path_key(entry.path) or "/",
            entry.request_id,
            "1" if entry.failed_upstream else "",
        )
    return out


class LogIndexer:
    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        minute_ttl_seconds: int,
        hour_ttl_seconds: int,
        request_id_ttl_seconds: int,
        batch_size: int = 500,
        claim_idle_seconds: float = 60.0,
        block_seconds: float = 1.0,
        name: str | None = None,
    ) -> None:
        self._redis = redis
        self._stream = keys.request_log_stream()
        self._group = keys.request_log_index_group()
        self.name = name or consumer_name()
        self._head = [
            keys.LOG_TAG,
            self._group,
            str(minute_ttl_seconds),
            str(hour_ttl_seconds),
            str(TOP_KEEP),
            str(request_id_ttl_seconds),
        ]
        self._batch_size = batch_size
        self._claim_idle_ms = int(claim_idle_seconds * 1000)
        self._block_ms = max(1, int(block_seconds * 1000))
        self._group_ready = False
        self.counted = 0  # entries this consumer counted (a duplicate is read but not counted)

    async def ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            # From the start of the stream: a first replica indexes what the data plane already wrote.
            await self._redis.xgroup_create(self._stream, self._group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):  # another replica made it
                raise
        self._group_ready = True

    async def run_once(self, *, block: bool = True) -> int:
        """Index reclaimed entries, then new ones (waiting up to block_seconds); returns how many it read."""
        await self.ensure_group()
        batch = await self._claim()
        if len(batch) < self._batch_size:
            response: Any = await self._redis.xreadgroup(
                self._group,
                self.name,
                {self._stream: ">"},
                count=self._batch_size - len(batch),
                block=None if batch or not block else self._block_ms,
            )
            for _stream, entries in response or []:
                batch.extend(entries)
        if batch:
            self.counted += await self.index(batch)
        return len(batch)

    async def index(self, batch: list[tuple[str, dict[str, str]]]) -> int:
        """Index and acknowledge `batch` in one script call; returns how many entries were new."""
        argv = [*self._head, *script_arguments(batch)]
        try:
            counted = await self._redis.evalsha(INDEX_SCRIPT_SHA1, 1, self._stream, *argv)  # type: ignore[misc]
        except NoScriptError:
            counted = await self._redis.eval(INDEX_SCRIPT, 1, self._stream, *argv)  # type: ignore[misc]
        return int(counted)

    async def _claim(self) -> list[tuple[str, dict[str, str]]]:
        result: Any = await self._redis.xautoclaim(
            self._stream,
            self._group,
            self.name,
            min_idle_time=self._claim_idle_ms,
            start_id="0-0",
            count=self._batch_size,
        )
        claimed = result[1] if result else []
        out: list[tuple[str, dict[str, str]]] = []
        trimmed: list[str] = []
        for entry_id, fields in claimed:
            if fields is None:  # trimmed from the stream while pending: nothing left to index
                trimmed.append(entry_id)
            else:
                out.append((entry_id, fields))
        if trimmed:
            await self._redis.xack(self._stream, self._group, *trimmed)
        if out:
            log.warning("took over %d request-log entries from a consumer that stopped", len(out))
        return out
