"""The request-log indexer: a consumer group on the data plane's stream that builds the query indexes and the
per-minute / per-hour aggregates, per proxy and over every proxy together (layout in shared/keys.py).

Every control-plane replica runs one consumer of LOG_INDEX_GROUP; XREADGROUP shares the entries out, and
entries a stopped replica left pending are taken over with XAUTOCLAIM after `claim_idle_seconds`.

A batch is one Lua script call (INDEX_SCRIPT) that reads its entries (XREADGROUP inside the script, or XRANGE
for claimed ids), indexes, aggregates and XACKs them atomically, so an entry is either indexed and
acknowledged or neither, and no entry travels to Python and back (Redis's core does the work: 14,500-18,000
entries per CPU-second, tests/bench/README.md). It is also idempotent by entry: an entry counts only
when it is new to the request-id hash of its hour and shard (HSETNX) and to its host's index (ZADD returns
1), checked and incremented in the same script, so an entry delivered twice (a retried batch, a claim racing
a slow replica) never counts twice, and neither does a copy of an entry the data plane's at-least-once
writer appended again (same request id, new stream id).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError

from shared import keys

from ..stream_consumer import consumer_name
from .entries import LATENCY_BOUNDS_MS

log = logging.getLogger(__name__)

# Members kept per top-N zset per bucket (the tail is approximate: see README): back to TOP_KEEP whenever a
# batch would leave more than TOP_MAX, so each stays within Redis's compact listpack encoding
# (zset-max-listpack-entries, 128 by default) instead of a skiplist of ~100 bytes per member.
TOP_KEEP: Final = 100
TOP_MAX: Final = 128
PATH_KEY_CHARS: Final = 200

# The script reads the entries itself (XREADGROUP, or XRANGE for ids a claim took over), so an entry never
# travels to Python and back: the indexer's cost is Redis's, one script call per batch.
# KEYS[1] the stream. ARGV: tag, group, consumer, count, minute TTL, hour TTL, top keep, request-id TTL, then
# (claim mode) the ids to index. Returns {entries read, entries counted, last id read}.
# Key names are built here with the formats of shared/keys.py (tests check the two agree).
INDEX_SCRIPT: Final = (
    (
        "local BOUNDS = {"
        + ", ".join(str(bound) for bound in LATENCY_BOUNDS_MS)
        + "}\n"
        + """local P, group, consumer, count = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local ttl = {m = tonumber(ARGV[5]), h = tonumber(ARGV[6])}
local keep = tonumber(ARGV[7])
local rid_ttl = tonumber(ARGV[8])
local rows, ids = {}, {}
if #ARGV > 8 then
  for i = 9, #ARGV do
    ids[#ids + 1] = ARGV[i]
    local found = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i], 'COUNT', 1)
    if found[1] then rows[#rows + 1] = found[1] end
  end
else
  local reply = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count, 'STREAMS', KEYS[1], '>')
  if reply and reply[1] then rows = reply[1][2] end
  for _, row in ipairs(rows) do ids[#ids + 1] = row[1] end
end
local counted = 0
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
-- One entry into the aggregates of one bucket: `family` '' for a proxy's keys, '-all' for every proxy's.
local function aggregate(family, suffix, seconds_to_live, e, class, seconds, hbucket, ip, user, path, tool)
  local akey = P .. ':agg' .. family .. ':' .. suffix
  bump(counters, akey, 'n', 1)
  bump(counters, akey, 's' .. class, 1)
  bump(counters, akey, 'bin', tonumber(e.bytes_in) or 0)
  bump(counters, akey, 'bout', tonumber(e.bytes_out) or 0)
  bump(counters, akey, 'lat', math.floor(seconds * 1000000))
  bump(counters, akey, 'h' .. hbucket, 1)
  expiries[akey] = seconds_to_live
  if ip ~= '' then
    local key = P .. ':uip' .. family .. ':' .. suffix
    push(uniques, key, ip); expiries[key] = seconds_to_live
  end
  if user ~= '' then
    local key = P .. ':uus' .. family .. ':' .. suffix
    push(uniques, key, user); expiries[key] = seconds_to_live
    key = P .. ':top' .. family .. ':user:' .. suffix
    bump(tops, key, user, 1); expiries[key] = seconds_to_live
  end
  local key = P .. ':top' .. family .. ':path:' .. suffix
  bump(tops, key, path, 1); expiries[key] = seconds_to_live
  if tool ~= '' then
    key = P .. ':top' .. family .. ':tool:' .. suffix
    bump(tops, key, tool, 1); expiries[key] = seconds_to_live
  end
end
for _, row in ipairs(rows) do
  local id, flat = row[1], row[2]
  local e = {}
  for j = 1, #flat, 2 do e[flat[j]] = flat[j + 1] end
  local ms = tonumber(string.match(id, '^(%d+)'))
  local host, ip, user = e.host or '', e.client_ip or '', e.user or ''
  local rid = e.request_id or ''
  local hour = math.floor(ms / 3600000)
  local fresh = true
  if rid ~= '' then
    local shard = 0
    for j = 1, #rid do shard = (shard * 31 + string.byte(rid, j)) % REQUEST_ID_SHARDS end
    local rkey = P .. ':rid:' .. hour .. ':' .. shard
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
    local status = tonumber(e.status) or 0
    local class = tostring(math.floor(status / 100))
    local tool = e.mcp_tool or ''
    local failed = (e.upstream_error or '') ~= ''
    if (status == 502 or status == 504) and (e.upstream or '') ~= '' then failed = true end
    index('ip', ip, ms, id)
    index('user', user, ms, id)
    index('client', e.client_id or '', ms, id)
    index('tool', tool, ms, id)
    if class == '4' or class == '5' then
      index('class', class .. 'xx', ms, id)
      index('hclass', host .. ':' .. class .. 'xx', ms, id)
    end
    if failed then index('err', '1', ms, id) end
    local seconds = tonumber(e.duration_seconds) or 0
    local latency_ms = seconds * 1000
    local hbucket = #BOUNDS
    for b = 1, #BOUNDS do
      if latency_ms <= BOUNDS[b] then hbucket = b - 1; break end
    end
    local path = e.path or ''
    local question = string.find(path, '?', 1, true)
    if question then path = string.sub(path, 1, question - 1) end
    path = string.sub(path, 1, PATH_CHARS)
    if path == '' then path = '/' end
    local buckets = {m = math.floor(ms / 60000), h = hour}
    for g, b in pairs(buckets) do
      -- The proxy's bucket, and the bucket of every proxy together (what stats over all proxies read).
      aggregate('', g .. ':' .. host .. ':' .. b, ttl[g], e, class, seconds, hbucket, ip, user, path, tool)
      aggregate('-all', g .. ':' .. b, ttl[g], e, class, seconds, hbucket, ip, user, path, tool)
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
-- A top set never holds more than TOP_MAX members, not even for a moment: past that Redis turns it into a
-- skiplist for good. When this batch could take it over, the merge happens here: the `keep` highest counts
-- stay (ties: the greater value, as ZREMRANGEBYRANK of the lowest ranks would leave), the rest go.
for key, row in pairs(tops) do
  local added = 0
  for _ in pairs(row) do added = added + 1 end
  if redis.call('ZCARD', key) + added <= TOP_MAX then
    for member, n in pairs(row) do redis.call('ZINCRBY', key, n, member) end
  else
    local merged, present, ranked = {}, {}, {}
    local current = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
    for i = 1, #current, 2 do
      merged[current[i]] = tonumber(current[i + 1]); present[current[i]] = true
    end
    for member, n in pairs(row) do merged[member] = (merged[member] or 0) + n end
    for member, n in pairs(merged) do ranked[#ranked + 1] = {member, n} end
    table.sort(ranked, function(a, b) return a[2] > b[2] or (a[2] == b[2] and a[1] > b[1]) end)
    local gone = {}
    for i = keep + 1, #ranked do
      if present[ranked[i][1]] then gone[#gone + 1] = ranked[i][1] end
    end
    if #gone > 0 then redis.call('ZREM', key, unpack(gone)) end
    for i = 1, math.min(keep, #ranked) do
      local member = ranked[i][1]
      if row[member] then redis.call('ZINCRBY', key, row[member], member) end
    end
  end
end
for key, seconds in pairs(expiries) do redis.call('EXPIRE', key, seconds) end
local names = {}
for key in pairs(index_keys) do names[#names + 1] = key end
if #names > 0 then chunked('SADD', P .. ':ix-keys', names) end
for first = 1, #ids, 1000 do
  redis.call('XACK', KEYS[1], group, unpack(ids, first, math.min(first + 999, #ids)))
end
return {#rows, counted, rows[#rows] and rows[#rows][1] or ''}
"""
    )
    .replace("PATH_CHARS", str(PATH_KEY_CHARS))
    .replace("TOP_MAX", str(TOP_MAX))
    .replace("REQUEST_ID_SHARDS", str(keys.REQUEST_ID_SHARDS))
)
INDEX_SCRIPT_SHA1: Final = hashlib.sha1(INDEX_SCRIPT.encode()).hexdigest()


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
            self.name,
            str(batch_size),
            str(minute_ttl_seconds),
            str(hour_ttl_seconds),
            str(TOP_KEEP),
            str(request_id_ttl_seconds),
        ]
        self._batch_size = batch_size
        self._claim_idle_ms = int(claim_idle_seconds * 1000)
        self._block_ms = max(1, int(block_seconds * 1000))
        self._group_ready = False
        self._last_seen = "$"
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
        """Index entries taken over from a stopped consumer, then new ones; when there were none, wait up to
        block_seconds for the stream to grow. Returns how many entries it read."""
        await self.ensure_group()
        claimed = await self._claim()
        read = await self.index_ids(claimed) if claimed else 0
        new, counted, last = await self._run_script([])
        self.counted += counted
        if last:
            self._last_seen = last
        if read + new == 0 and block:
            # The script cannot block; XREAD (outside the group, so it takes nothing) waits for the stream
            # to grow past what this consumer last saw, then the next call reads through the group.
            grown: Any = await self._redis.xread(
                {self._stream: self._last_seen}, count=1, block=self._block_ms
            )
            for _stream, rows in grown or []:
                self._last_seen = rows[-1][0]
        return read + new

    async def index_ids(self, ids: list[str]) -> int:
        """Index (and acknowledge) these entries by id: a claim's, or a redelivery; returns how many were
        read. Entries counted before count nothing."""
        read, counted, _last = await self._run_script(ids)
        self.counted += counted
        return read

    async def _run_script(self, ids: list[str]) -> tuple[int, int, str]:
        argv = [*self._head, *ids]
        try:
            reply: Any = await self._redis.evalsha(INDEX_SCRIPT_SHA1, 1, self._stream, *argv)  # type: ignore[misc]
        except NoScriptError:
            reply = await self._redis.eval(INDEX_SCRIPT, 1, self._stream, *argv)  # type: ignore[misc]
        return int(reply[0]), int(reply[1]), str(reply[2])

    async def _claim(self) -> list[str]:
        """Ids of entries a stopped consumer left pending for claim_idle_seconds, now this consumer's (the
        script acknowledges ids whose entries were trimmed meanwhile)."""
        result: Any = await self._redis.xautoclaim(
            self._stream,
            self._group,
            self.name,
            min_idle_time=self._claim_idle_ms,
            start_id="0-0",
            count=self._batch_size,
            justid=True,
        )
        # With JUSTID redis-py answers the list of ids alone.
        claimed = [str(entry_id) for entry_id in result or []]
        if claimed:
            log.warning("took over %d request-log entries from a consumer that stopped", len(claimed))
        return claimed
