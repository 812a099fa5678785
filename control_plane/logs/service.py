"""The request log as the management API offers it: who may see which entries (the admin every proxy's; an
ordinary token only those of the proxies it owns now), and the search / stats / tail operations."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from shared import keys
from shared.config import Settings

from .. import store
from ..errors import Forbidden
from ..principal import Principal
from .query import HostScope, LogFilter
from .search import LogSearch, SearchPage
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
        """How far the indexer is: entries not delivered to it yet (the group's lag, Redis 7) plus those
        delivered and not acknowledged yet; read from XINFO, never by scanning."""
        stream = keys.request_log_stream()
        try:
            length = int(await self._redis.xlen(stream))
            groups: Any = await self._redis.xinfo_groups(stream)
        except ResponseError:  # no stream yet
            return {"running": False, "stream_entries": 0, "unindexed": 0}
        group = next((g for g in groups if g.get("name") == keys.request_log_index_group()), None)
        if group is None:
            return {"running": False, "stream_entries": length, "unindexed": length}
        lag = group.get("lag")
        unindexed = (int(lag) if lag is not None else length) + int(group.get("pending") or 0)
        return {"running": True, "stream_entries": length, "unindexed": min(unindexed, length)}

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
