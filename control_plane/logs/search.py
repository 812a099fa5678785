"""Log search: newest first, cursor-paged, over the indexes and the stream.

How a search finds entries (README "Observability" describes it for users):
1. Entries the indexer has not acknowledged yet (ids at or above the group's frontier: its oldest pending
   entry, or the first after its last-delivered id) are read straight from the stream with XREVRANGE, so a
   search never misses an entry only because the indexer is behind (or stopped).
2. Below the frontier every entry is indexed. The search takes the filter's index with the fewest entries in
   the time range (ZCOUNT on each candidate; a union of keys, e.g. an ordinary token's own hosts, is merged
   newest first); with several indexed filters the smallest drives and PROBE_SCRIPT keeps, inside Redis,
   only the ids every other filter's index holds; then it reads the entries by id. Without any usable
   index (the admin, no filter) the stream itself is the time index.
3. Every candidate goes through LogFilter.matches, whichever path produced it, so indexes change speed,
   never answers. An index entry whose stream entry was trimmed meanwhile is skipped.
A search reads at most `scan_limit` candidates; when it stops there it answers with what it found,
`partial: true` and a cursor to go on from.
"""

from __future__ import annotations

import heapq
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from shared import keys

from .entries import LogEntry, parse_entry, stream_id_key
from .query import LogFilter

CHUNK = 256
Key = tuple[int, int]


@dataclass(frozen=True, slots=True)
class SearchPage:
    items: list[LogEntry]
    next_cursor: str | None
    scanned: int
    partial: bool
    index: str  # which path answered: "stream", "request-id", or the index dimension


async def index_frontier(redis: aioredis.Redis) -> Key | None:
    """Every entry with a smaller id is indexed (or trimmed); None: the indexer has not started."""
    stream = keys.request_log_stream()
    try:
        groups: Any = await redis.xinfo_groups(stream)
    except ResponseError:  # no stream yet
        return None
    group = next((g for g in groups if g.get("name") == keys.request_log_index_group()), None)
    if group is None:
        return None
    last_ms, last_seq = stream_id_key(str(group.get("last-delivered-id") or "0-0"))
    frontier = (last_ms, last_seq + 1)
    if int(group.get("pending") or 0) > 0:
        summary: Any = await redis.xpending(stream, keys.request_log_index_group())
        if summary and summary.get("min"):
            frontier = min(frontier, stream_id_key(str(summary["min"])))
    return frontier


def _format(key: Key) -> str:
    return f"{key[0]}-{key[1]}"


def _grow(chunk: int) -> int:
    """Reads start at the page size (most pages fill at once) and grow while a filter keeps missing."""
    return min(chunk * 4, CHUNK)


async def _stream_entries(
    redis: aioredis.Redis, upper: str, lower: str, chunk: int
) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """Stream entries newest first between `upper` and `lower` (XREVRANGE bounds, `(` = exclusive)."""
    stream = keys.request_log_stream()
    while True:
        rows: Any = await redis.xrevrange(stream, upper, lower, count=chunk)
        for row in rows:
            yield row
        if len(rows) < chunk:
            return
        upper = "(" + rows[-1][0]
        chunk = _grow(chunk)


async def _index_ids(
    redis: aioredis.Redis, key: str, max_ms: int, min_ms: int, chunk: int
) -> AsyncIterator[str]:
    """Ids of one index, newest first. A chunk always ends on a millisecond boundary (members of one score
    come in lexical, not numeric, order), so sorting each chunk gives the exact order."""
    upper: str | int = max_ms
    while True:
        rows: Any = await redis.zrevrangebyscore(key, upper, min_ms, start=0, num=chunk, withscores=True)
        if not rows:
            return
        members = [str(member) for member, _score in rows]
        last_ms = int(rows[-1][1])
        full = len(rows) == chunk
        if full:
            members = [str(m) for m, s in rows if int(s) != last_ms]
            members += await redis.zrangebyscore(key, last_ms, last_ms)
        members.sort(key=stream_id_key, reverse=True)
        for member in members:
            yield member
        if not full:
            return
        upper = f"({last_ms}"
        chunk = _grow(chunk)


# KEYS[1] the driving index, then the keys of the other filters' indexes. ARGV: max, min, chunk, then the
# number of keys of each other filter (a filter matches when any of its keys holds the id). One chunk of the
# driver (extended to its last millisecond), probed with ZSCORE inside Redis: only ids that every filter's
# index holds come back, and the last score read when there may be more.
PROBE_SCRIPT = """
local chunk = tonumber(ARGV[3])
local rows = redis.call('ZREVRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[2], 'WITHSCORES', 'LIMIT', 0, chunk)
local full = #rows == 2 * chunk
local last = rows[#rows]
local members = {}
for i = 1, #rows, 2 do
  if not full or rows[i + 1] ~= last then members[#members + 1] = rows[i] end
end
if full then
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], last, last)) do
    members[#members + 1] = member
  end
end
local groups, position = {}, 2
for g = 4, #ARGV do
  local group = {}
  for i = 1, tonumber(ARGV[g]) do group[i] = KEYS[position]; position = position + 1 end
  groups[#groups + 1] = group
end
local out = {}
for _, member in ipairs(members) do
  local keep = true
  for _, group in ipairs(groups) do
    local any = false
    for _, key in ipairs(group) do
      if redis.call('ZSCORE', key, member) then any = true; break end
    end
    if not any then keep = false; break end
  end
  if keep then out[#out + 1] = member end
end
return {out, full and last or ''}
"""


async def _probed_ids(
    probe: Any, driver: str, others: list[list[str]], max_ms: int, min_ms: int, chunk: int
) -> AsyncIterator[str]:
    """Ids of `driver` (newest first) that every group of `others` holds too."""
    keys_ = [driver, *(key for group in others for key in group)]
    sizes = [len(group) for group in others]
    upper: str = str(max_ms)
    while True:
        matched, last = await probe(keys=keys_, args=[upper, min_ms, chunk, *sizes])
        for member in sorted((str(m) for m in matched), key=stream_id_key, reverse=True):
            yield member
        if not last:
            return
        upper = f"({last}"
        chunk = _grow(chunk)


async def _merged(sources: list[AsyncIterator[str]]) -> AsyncIterator[str]:
    """Union of id sources, newest first, each id once."""
    heap: list[tuple[tuple[int, int], int, str]] = []
    for number, source in enumerate(sources):
        first = await anext(source, None)
        if first is not None:
            key = stream_id_key(first)
            heap.append(((-key[0], -key[1]), number, first))
    heapq.heapify(heap)
    last: str | None = None
    while heap:
        _key, number, member = heapq.heappop(heap)
        if member != last:
            yield member
            last = member
        following = await anext(sources[number], None)
        if following is not None:
            key = stream_id_key(following)
            heapq.heappush(heap, ((-key[0], -key[1]), number, following))


async def _fetch(redis: aioredis.Redis, ids: list[str]) -> list[tuple[str, dict[str, str]]]:
    """The stream entries of `ids`, in order; ids trimmed from the stream are left out."""
    stream = keys.request_log_stream()
    async with redis.pipeline(transaction=False) as pipe:
        for entry_id in ids:
            pipe.xrange(stream, entry_id, entry_id, count=1)
        results: list[Any] = await pipe.execute()
    return [rows[0] for rows in results if rows]


class LogSearch:
    def __init__(self, redis: aioredis.Redis, *, scan_limit: int) -> None:
        self._redis = redis
        self._scan_limit = scan_limit
        self._probe = redis.register_script(PROBE_SCRIPT)

    async def search(self, query: LogFilter, *, limit: int, cursor: str | None = None) -> SearchPage:
        since_ms = int(query.since * 1000)
        until_ms = int(query.until * 1000)
        upper: Key = (until_ms, 2**64 - 1)
        if cursor is not None:
            upper = min(upper, stream_id_key(cursor))
            upper = (upper[0], upper[1] - 1) if upper[1] > 0 else (upper[0] - 1, 2**64 - 1)
        if upper[0] < since_ms:
            return SearchPage([], None, 0, False, "stream")
        collector = _Collector(query, limit, self._scan_limit)
        frontier = await index_frontier(self._redis)
        choice = await self._choose_index(query, since_ms, upper[0], limit + 1)
        if choice is None or frontier is None:
            # The stream is the index: one pass over the whole range.
            await collector.take_entries(
                _stream_entries(self._redis, _format(upper), str(since_ms), min(limit + 1, CHUNK))
            )
            return collector.page("stream")
        # 1. Not yet indexed: read from the stream.
        if upper >= frontier:
            await collector.take_entries(
                _stream_entries(self._redis, _format(upper), _format(frontier), min(limit + 1, CHUNK))
            )
            if collector.done:
                return collector.page(choice[0])
            upper = (frontier[0], frontier[1] - 1) if frontier[1] > 0 else (frontier[0] - 1, 2**64 - 1)
            if upper[0] < since_ms:
                return collector.page(choice[0])
        # 2. Indexed: ids from the chosen index, entries by id.
        name, ids = choice
        await collector.take_ids(self._redis, _bounded(ids(upper[0]), upper))
        return collector.page(name)

    async def _choose_index(
        self, query: LogFilter, since_ms: int, until_ms: int, first_chunk: int
    ) -> tuple[str, Any] | None:
        redis = self._redis
        if query.request_id is not None:
            hours = range(since_ms // 3_600_000, until_ms // 3_600_000 + 1)
            if len(hours) <= 24 * 40:
                request_id = query.request_id

                def by_request_id(_upper_ms: int) -> AsyncIterator[str]:
                    return _request_id_ids(redis, request_id, hours)

                return "request-id", by_request_id
        choices = query.index_choices()
        if not choices:
            return None
        if not all(choices):
            # An empty union (a tenant that owns no proxy): no entry can match, and no index need be read.
            return "host", _no_ids
        async with redis.pipeline(transaction=False) as pipe:
            for choice in choices:
                for dimension, value in choice:
                    pipe.zcount(keys.log_index(dimension, value), since_ms, until_ms)
            counts: list[int] = await pipe.execute()
        sizes = []
        position = 0
        for choice in choices:
            sizes.append(sum(counts[position : position + len(choice)]))
            position += len(choice)
        best_index = sizes.index(min(sizes))
        best = choices[best_index]
        others = [
            [keys.log_index(dimension, value) for dimension, value in choice]
            for number, choice in enumerate(choices)
            if number != best_index
        ]
        chunk = min(first_chunk, CHUNK)
        probe = self._probe

        def by_index(upper_ms: int) -> AsyncIterator[str]:
            if len(best) == 1 and others:
                # Several filters with indexes: the smallest drives, Redis checks the others' membership.
                return _probed_ids(probe, keys.log_index(*best[0]), others, upper_ms, since_ms, chunk)
            sources = [
                _index_ids(redis, keys.log_index(dimension, value), upper_ms, since_ms, chunk)
                for dimension, value in best
            ]
            return sources[0] if len(sources) == 1 else _merged(sources)

        return best[0][0], by_index


def _no_ids(_upper_ms: int) -> AsyncIterator[str]:
    return _nothing()


async def _nothing() -> AsyncIterator[str]:
    return
    yield  # an async generator that yields nothing


async def _request_id_ids(redis: aioredis.Redis, request_id: str, hours: range) -> AsyncIterator[str]:
    async with redis.pipeline(transaction=False) as pipe:
        for hour in hours:
            pipe.hget(keys.log_request_ids(hour, request_id), request_id)
            pipe.hget(keys.log_request_ids_unsharded(hour), request_id)
        found: list[str | None] = await pipe.execute()
    for entry_id in sorted({f for f in found if f}, key=stream_id_key, reverse=True):
        yield entry_id


async def _bounded(ids: AsyncIterator[str], upper: Key) -> AsyncIterator[str]:
    async for entry_id in ids:
        if stream_id_key(entry_id) <= upper:
            yield entry_id


class _Collector:
    def __init__(self, query: LogFilter, limit: int, scan_limit: int) -> None:
        self._query = query
        self._limit = limit
        self._scan_limit = scan_limit
        self.items: list[LogEntry] = []
        self.scanned = 0
        self._last_scanned: str | None = None
        self._more = False
        self._partial = False

    @property
    def done(self) -> bool:
        return self._more

    def _take(self, entry_id: str, fields: dict[str, str]) -> bool:
        """Consider one entry; False once the page is full or the scan budget is spent."""
        if len(self.items) >= self._limit:
            self._more = True
            return False
        if self.scanned >= self._scan_limit:
            self._more = self._partial = True
            return False
        self.scanned += 1
        self._last_scanned = entry_id
        entry = parse_entry(entry_id, fields)
        if self._query.matches(entry):
            self.items.append(entry)
        return True

    async def take_entries(self, rows: AsyncIterator[tuple[str, dict[str, str]]]) -> None:
        async for entry_id, fields in rows:
            if not self._take(entry_id, fields):
                return

    async def take_ids(self, redis: aioredis.Redis, ids: AsyncIterator[str]) -> None:
        batch: list[str] = []
        size = min(self._limit + 1, CHUNK)
        async for entry_id in ids:
            batch.append(entry_id)
            if len(batch) >= size:
                if not await self._take_batch(redis, batch):
                    return
                batch = []
                size = _grow(size)
        if batch:
            await self._take_batch(redis, batch)

    async def _take_batch(self, redis: aioredis.Redis, ids: list[str]) -> bool:
        for entry_id, fields in await _fetch(redis, ids):
            if not self._take(entry_id, fields):
                return False
        return True

    def page(self, index: str) -> SearchPage:
        cursor = None
        if self._more:
            cursor = self._last_scanned if self._partial else (self.items[-1].id if self.items else None)
        return SearchPage(self.items, cursor, self.scanned, self._partial, index)
