"""Retention of the request log: the stream by age (LOG_RETENTION_SECONDS) and size
(LOG_RETENTION_MAX_ENTRIES), then the indexes down to the stream's first entry.

One replica per interval runs a pass (a short Redis lock). Trimming the stream first and the indexes after
leaves, for a moment, index entries pointing at trimmed entries; the search skips those (an id whose XRANGE
comes back empty), and the pass removes them. Aggregates (per proxy and across proxies) are not trimmed here:
each carries its own TTL, set by the indexer, and outlives the entries. Request-id hashes expire with the
entries (TTL = retention + one hour).
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any, Final

import redis.asyncio as aioredis

from shared import keys

from .entries import stream_id_ms

log = logging.getLogger(__name__)

# KEYS: index keys. ARGV[1] the cutoff (ms, exclusive), ARGV[2] the registry set. Trims each index and
# unregisters it when it is empty, atomically with respect to the indexer (which registers as it adds).
TRIM_INDEX_SCRIPT: Final = """
local removed = 0
for _, key in ipairs(KEYS) do
  removed = removed + redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. ARGV[1])
  if redis.call('ZCARD', key) == 0 then redis.call('SREM', ARGV[2], key) end
end
return removed
"""
SCAN_COUNT: Final = 500


class LogRetention:
    def __init__(self, redis: aioredis.Redis, *, max_age_seconds: int, max_entries: int) -> None:
        self._redis = redis
        self._max_age_seconds = max_age_seconds
        self._max_entries = max_entries
        self._token = secrets.token_hex(8)
        self._trim_indexes = redis.register_script(TRIM_INDEX_SCRIPT)

    async def run_if_due(self, interval_seconds: float) -> dict[str, int] | None:
        """A pass, unless another replica ran one within the interval."""
        got = await self._redis.set(
            keys.log_trim_lock(), self._token, nx=True, px=max(1, int(interval_seconds * 900))
        )
        return await self.trim(time.time()) if got else None

    async def trim(self, now: float) -> dict[str, int]:
        redis = self._redis
        stream = keys.request_log_stream()
        cutoff_ms = int((now - self._max_age_seconds) * 1000)
        trimmed = await redis.xtrim(stream, minid=f"{cutoff_ms}-0", approximate=False)
        trimmed += await redis.xtrim(stream, maxlen=self._max_entries, approximate=False)
        first: Any = await redis.xrange(stream, "-", "+", count=1)
        # Nothing left: everything up to now may go (an entry written meanwhile is newer than a minute ago).
        index_cutoff = stream_id_ms(first[0][0]) if first else int(now * 1000) - 60_000
        removed = 0
        cursor: int = 0
        while True:
            cursor, members = await redis.sscan(keys.log_index_keys(), cursor, count=SCAN_COUNT)
            if members:
                removed += int(
                    await self._trim_indexes(keys=list(members), args=[index_cutoff, keys.log_index_keys()])
                )
            if cursor == 0:
                break
        if trimmed or removed:
            log.info("request log retention: %d entries and %d index entries removed", trimmed, removed)
        return {"entries": int(trimmed), "index_entries": removed}
