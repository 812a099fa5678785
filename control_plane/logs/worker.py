"""What the control plane runs in the background for the request log, in every replica: the indexer (one
consumer of the shared group) and the retention pass (one replica per interval)."""

from __future__ import annotations

import redis.asyncio as aioredis

from shared.config import Settings

from ..background import BackgroundLoops
from .indexer import LogIndexer
from .retention import LogRetention


class LogWorker:
    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        self._settings = settings
        self.indexer = LogIndexer(
            redis,
            minute_ttl_seconds=settings.LOG_MINUTE_AGGREGATE_RETENTION_SECONDS,
            hour_ttl_seconds=settings.LOG_HOUR_AGGREGATE_RETENTION_SECONDS,
            request_id_ttl_seconds=settings.LOG_RETENTION_SECONDS + 3600,
            batch_size=settings.LOG_INDEXER_BATCH,
            claim_idle_seconds=settings.LOG_INDEXER_CLAIM_IDLE_SECONDS,
        )
        self.retention = LogRetention(
            redis,
            max_age_seconds=settings.LOG_RETENTION_SECONDS,
            max_entries=settings.LOG_RETENTION_MAX_ENTRIES,
        )
        self.loops = BackgroundLoops()

    def start(self) -> None:
        if self._settings.LOG_INDEXER_ENABLED:
            self.loops.add("log-indexer", self._index_step)
            self.loops.add("log-retention", self._retention_step)
        self.loops.start()

    async def stop(self) -> None:
        await self.loops.stop()

    async def _index_step(self) -> None:
        await self.indexer.run_once()

    async def _retention_step(self) -> None:
        interval = self._settings.LOG_TRIM_INTERVAL_SECONDS
        await self.retention.run_if_due(interval)
        await self.loops.pause(interval)
