"""Keep the runtime's route table in step with Redis: pub/sub wake-ups, reload on (re)connect, reconcile.

Pub/sub is only a hint (at-most-once): a message naming a version newer than the table's triggers a reload;
the table is also reloaded after every (re)subscribe, since messages may have been missed, and compared
against the stored version every RECONCILE_INTERVAL_SECONDS. While Redis is unreachable the last good table
keeps serving and the loop reconnects with capped exponential backoff. A table that fails to build never
replaces the old one.

Protection state that is not versioned config rides on the same connection: revoked access-token ids arrive
on the revocations channel ("<jti> <exp>") and are applied at once (the 1 s revocation bound), and the
revoked set and the JWKS are re-read every REVOCATION_RECONCILE_SECONDS, so a missed message or a key
rotation (which does not bump the config version) converges without a config change."""

from __future__ import annotations

import asyncio
import logging
import time

from redis.exceptions import RedisError

from data_plane.runtime import Runtime
from data_plane.sync.snapshot import load_snapshot, read_revocation_state, read_version
from shared import keys

log = logging.getLogger(__name__)

BACKOFF_INITIAL_SECONDS = 0.1
BACKOFF_MAX_SECONDS = 5.0
# get_message wakes at least this often so the loop notices shutdown even if a cancel was lost inside the
# Redis client (observed while it was connecting).
LISTEN_POLL_SECONDS = 1.0
REVOCATION_RECONCILE_SECONDS = 5.0


async def reload(runtime: Runtime) -> bool:
    """Load and swap in a fresh table; False (old table kept) when Redis fails or the table cannot build."""
    try:
        snapshot = await load_snapshot(runtime.redis)
    except (RedisError, OSError):
        runtime.metrics.count_reload("failure")
        raise
    except Exception:
        log.exception("route table failed to build; keeping version %d", runtime.table.version)
        runtime.metrics.count_reload("failure")
        return False
    table = snapshot.table
    if runtime.certificates is not None:
        # Certificate writes bump the config version too; a failed refresh keeps the last good table. It runs
        # before the swap so that once a version is served (and reported by /health) its certificates are
        # too: HTTP->HTTPS redirects follow the certificate table, and must not lag the route table.
        await runtime.certificates.refresh()
    runtime.swap(table, snapshot.auth, snapshot.jwks_raw)
    runtime.revoked = snapshot.revoked
    runtime.metrics.count_reload("success")
    log.info(
        "route table version %d loaded: %d proxies, %d protected, %d signing keys",
        table.version,
        len(table),
        len(snapshot.auth.policies),
        len(snapshot.auth.keys.keys),
    )
    return True


async def refresh_revocation_state(runtime: Runtime) -> None:
    """Re-read the revoked set and the JWKS; a changed JWKS reloads everything (keys are built with the
    auth table)."""
    jwks_raw, revoked = await read_revocation_state(runtime.redis)
    runtime.revoked = revoked
    if jwks_raw != runtime.jwks_raw:
        log.info("signing keys changed; reloading")
        await reload(runtime)


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
                await pubsub.subscribe(keys.changes_channel(), keys.oauth_revocations_channel())
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
                    await pubsub.aclose()
                except (RedisError, OSError):
                    pass
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)

    async def _listen(self, pubsub: object) -> None:
        runtime = self._runtime
        loop = asyncio.get_running_loop()
        next_reconcile = loop.time() + self._reconcile_seconds
        next_revocations = loop.time() + REVOCATION_RECONCILE_SECONDS
        revocations_channel = keys.oauth_revocations_channel()
        while not runtime.draining:
            timeout = min(max(min(next_reconcile, next_revocations) - loop.time(), 0.0), LISTEN_POLL_SECONDS)
            message = await pubsub.get_message(timeout=timeout)  # type: ignore[attr-defined]
            if message is not None and message.get("type") == "message":
                if message.get("channel") == revocations_channel:
                    runtime.revoked = runtime.revoked.with_message(str(message["data"]), now=time.time())
                else:
                    try:
                        announced = int(message["data"])
                    except (TypeError, ValueError):
                        announced = runtime.table.version + 1  # unreadable hint: reload to be safe
                    if announced > runtime.table.version:
                        await reload(runtime)
            if loop.time() >= next_revocations:
                next_revocations = loop.time() + REVOCATION_RECONCILE_SECONDS
                await refresh_revocation_state(runtime)
            if loop.time() >= next_reconcile:
                next_reconcile = loop.time() + self._reconcile_seconds
                if await read_version(runtime.redis) != runtime.table.version:
                    await reload(runtime)
