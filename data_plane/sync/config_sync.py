"""Keep the runtime's route table in step with Redis: pub/sub wake-ups, reload on (re)connect, reconcile.

Pub/sub is only a hint (at-most-once): a message naming a version newer than the table's triggers a reload;
the table is also reloaded after every (re)subscribe, since messages may have been missed, and compared
against the stored version every RECONCILE_INTERVAL_SECONDS. While Redis is unreachable the last good table
keeps serving and the loop reconnects with capped exponential backoff. A table that fails to build never
replaces the old one."""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError

from data_plane.runtime import Runtime
from data_plane.sync.snapshot import load_table, read_version
from shared import keys

log = logging.getLogger(__name__)

BACKOFF_INITIAL_SECONDS = 0.1
BACKOFF_MAX_SECONDS = 5.0
# get_message wakes at least this often so the loop notices shutdown even if a cancel was lost inside the
# Redis client (observed while it was connecting).
LISTEN_POLL_SECONDS = 1.0


async def reload(runtime: Runtime) -> bool:
    """Load and swap in a fresh table; False (old table kept) when Redis fails or the table cannot build."""
    try:
        table = await load_table(runtime.redis)
    except (RedisError, OSError):
        runtime.metrics.count_reload("failure")
        raise
    except Exception:
        log.exception("route table failed to build; keeping version %d", runtime.table.version)
        runtime.metrics.count_reload("failure")
        return False
    runtime.swap_table(table)
    runtime.metrics.count_reload("success")
    log.info("route table version %d loaded: %d proxies", table.version, len(table))
    return True


class ConfigSync:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._reconcile_seconds = runtime.settings.RECONCILE_INTERVAL_SECONDS

    async def run(self) -> None:
        runtime = self._runtime
        backoff = BACKOFF_INITIAL_SECONDS
        while not runtime.draining:
            pubsub = runtime.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(keys.changes_channel())
                await reload(runtime)
                runtime.redis_connected = True
                backoff = BACKOFF_INITIAL_SECONDS
                await self._listen(pubsub)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if runtime.redis_connected:
                    log.warning(
                        "Redis unavailable (%s); serving config version %d", exc, runtime.table.version
                    )
                runtime.redis_connected = False
            finally:
                try:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                except (RedisError, OSError):
                    pass
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)

    async def _listen(self, pubsub: object) -> None:
        runtime = self._runtime
        loop = asyncio.get_running_loop()
        next_reconcile = loop.time() + self._reconcile_seconds
        while not runtime.draining:
            timeout = min(max(next_reconcile - loop.time(), 0.0), LISTEN_POLL_SECONDS)
            message = await pubsub.get_message(timeout=timeout)  # type: ignore[attr-defined]
            if message is not None and message.get("type") == "message":
                try:
                    announced = int(message["data"])
                except (TypeError, ValueError):
                    announced = runtime.table.version + 1  # unreadable hint: reload to be safe
                if announced > runtime.table.version:
                    await reload(runtime)
            if loop.time() >= next_reconcile:
                next_reconcile = loop.time() + self._reconcile_seconds
                if await read_version(runtime.redis) != runtime.table.version:
                    await reload(runtime)
