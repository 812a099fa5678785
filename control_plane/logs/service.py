"""The request log as the management API offers it: who may see which entries (the admin every proxy's; an
ordinary token only those of the proxies it owns now), and the search / stats / tail operations."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from shared import keys
from shared.config import Settings

from .. import store
from ..errors import Forbidden
from ..principal import Principal
from .query import HostScope, LogFilter
from .search import LogSearch, SearchPage, index_frontier
from .stats import LogStats, StatsRequest
from .tail import TailSlots, tail_events


class RequestLogs:
    def __init__(self, store_: store.Store, settings: Settings) -> None:
        self._store = store_
        self._redis: aioredis.Redis = store_.redis
        self._settings = settings
        self.searcher = LogSearch(self._redis, scan_limit=settings.LOG_SEARCH_SCAN_LIMIT)
        self.aggregates = LogStats(
            self._redis,
            minute_retention_seconds=settings.LOG_MINUTE_AGGREGATE_RETENTION_SECONDS,
            hour_retention_seconds=settings.LOG_HOUR_AGGREGATE_RETENTION_SECONDS,
        )
        self.tail_slots = TailSlots(settings.LOG_TAIL_MAX_STREAMS)

    @property
    def slow_threshold_seconds(self) -> float:
        return self._settings.LOG_SLOW_THRESHOLD_SECONDS

    async def scope(self, principal: Principal, host: str | None) -> HostScope | None:
        """None for the admin (every host); else what the caller's own proxies serve. A `host` filter
        naming a host the caller's proxies do not serve is refused."""
        if principal.is_admin:
            return None
        proxies = await self._store.reader.all(store.proxies())
        scope = HostScope.of(principal.name, {name: proxy.owner for name, proxy in proxies.items()})
        if host is not None and not scope.allows(host):
            raise Forbidden(f"host {host!r} is not served by a proxy of this token")
        return scope

    async def search(self, query: LogFilter, *, limit: int, cursor: str | None) -> SearchPage:
        return await self.searcher.search(query, limit=limit, cursor=cursor)

    async def stats(self, request: StatsRequest) -> dict[str, Any]:
        return await self.aggregates.stats(request)

    async def indexer_state(self) -> dict[str, Any]:
        """How far the indexer is: entries of the stream not indexed yet (lag) and how many are pending."""
        frontier = await index_frontier(self._redis)
        length = await self._redis.xlen(keys.request_log_stream())
        if frontier is None:
            return {"running": False, "stream_entries": length, "unindexed": length}
        unindexed: Any = await self._redis.xrange(
            keys.request_log_stream(), f"{frontier[0]}-{frontier[1]}", "+", count=10_001
        )
        return {"running": True, "stream_entries": length, "unindexed": len(unindexed)}

    def tail(
        self,
        query: LogFilter,
        *,
        after: str | None,
        max_seconds: float | None,
        disconnected: Callable[[], Awaitable[bool]],
    ) -> AsyncIterator[str]:
        limit = self._settings.LOG_TAIL_MAX_SECONDS
        seconds = limit if max_seconds is None else min(max_seconds, limit)
        self.tail_slots.check()
        return tail_events(
            self._redis,
            query,
            after=after,
            max_seconds=seconds,
            disconnected=disconnected,
            slots=self.tail_slots,
        )
