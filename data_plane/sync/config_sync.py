"""Keep the runtime's route table in step with Redis: pub/sub wake-ups, changes applied piecewise, reload on
(re)connect, reconcile.

A change is applied from the changes stream: the entries after the last one applied name the objects to
re-read, and only those are re-read and recompiled (ConfigLoader.refresh; data_plane.sync.changes,
snapshot.read_changes, routing TableBuilder, auth AuthBuilder), so a change costs the same with ten proxies
or ten thousand. Anything the stream cannot vouch for (a gap, an unknown kind, a first load, a failed
piecewise build) falls back to reading everything (ConfigLoader.reload).
Pub/sub is only a hint (at-most-once): a message naming a version newer than the table's triggers a refresh;
the table is also reloaded after every (re)subscribe, since messages may have been missed, and compared
against the stored version every RECONCILE_INTERVAL_SECONDS. While Redis is unreachable the last good table
keeps serving and the loop reconnects with capped exponential backoff. A table that fails to build never
replaces the old one.

Protection state that is not versioned config rides on the same connection: revoked access-token ids arrive
on the revocations channel ("<jti> <exp>") and are applied at once (the 1 s revocation bound), and the
revoked set and the JWKS are re-read every REVOCATION_RECONCILE_SECONDS, so a missed message converges
without a config change."""

from __future__ import annotations

import asyncio
import logging
import time

from redis.exceptions import RedisError

from data_plane.auth.auth_table import AuthBuilder
from data_plane.routing.route_table import TableBuilder
from data_plane.runtime import Runtime
from data_plane.sync.changes import collect
from data_plane.sync.snapshot import (
    parse_rows,
    present,
    read_all,
    read_changes,
    read_revocation_state,
    read_version,
)
from shared import keys
from shared.models import ProxyTarget, Route, ServiceEndpoint

log = logging.getLogger(__name__)

BACKOFF_INITIAL_SECONDS = 0.1
BACKOFF_MAX_SECONDS = 5.0
# get_message wakes at least this often so the loop notices shutdown even if a cancel was lost inside the
# Redis client (observed while it was connecting).
LISTEN_POLL_SECONDS = 1.0
REVOCATION_RECONCILE_SECONDS = 5.0
# Reads of a piecewise refresh before it gives up and reloads everything (writes keep arriving).
MAX_CHANGE_READS = 5


class ConfigLoader:
    """The builders behind the runtime's tables and the changes-stream cursor they are current to."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._tables = TableBuilder()
        self._auth = AuthBuilder()
        self._cursor: str | None = None  # None: no full load yet, the next refresh reloads everything

    async def reload(self) -> bool:
        """Read everything and swap in fresh tables; False (old tables kept) when they cannot build."""
        runtime = self._runtime
        try:
            snapshot = await read_all(runtime.redis)
        except (RedisError, OSError):
            runtime.metrics.count_reload("failure")
            raise
        try:
            table = self._tables.replace_all(
                snapshot.version,
                present(parse_rows(ProxyTarget, snapshot.proxies, "proxy")).values(),
                present(parse_rows(Route, snapshot.routes, "route")).values(),
                present(parse_rows(ServiceEndpoint, snapshot.services, "service endpoint")),
            )
            auth = self._auth.replace_all(snapshot.auth, snapshot.resources, snapshot.jwks)
        except Exception:
            log.exception("route table failed to build; keeping version %d", runtime.table.version)
            runtime.metrics.count_reload("failure")
            self._cursor = None
            return False
        for reason in auth.skipped:
            log.warning("auth config skipped: %s", reason)
        if runtime.certificates is not None:
            # Certificate writes bump the config version too; a failed refresh keeps the last good table. It
            # runs before the swap so that once a version is served (and reported by /health) its
            # certificates are too: HTTP->HTTPS redirects follow the certificate table.
            await runtime.certificates.refresh()
        runtime.swap(table, auth, snapshot.jwks)
        runtime.revoked = snapshot.revoked
        self._cursor = snapshot.cursor
        runtime.metrics.count_reload("success")
        runtime.metrics.count_apply("full")
        log.info(
            "route table version %d loaded: %d proxies, %d protected, %d signing keys",
            table.version,
            len(table),
            len(auth.policies),
            len(auth.keys.keys),
        )
        return True

    async def refresh(self) -> bool:
        """Bring the tables to the stored version: piecewise from the changes stream when it can vouch for
        every change since the last one applied, else by reloading everything."""
        if self._cursor is None:
            return await self.reload()
        runtime = self._runtime
        try:
            applied = await self._apply_changes(self._cursor)
        except (RedisError, OSError):
            runtime.metrics.count_reload("failure")
            raise
        except Exception:
            log.exception("applying changes failed; reloading everything")
            applied = False
        return True if applied else await self.reload()

    async def _apply_changes(self, cursor: str) -> bool:
        runtime = self._runtime
        version = runtime.table.version
        proxies: dict[str, str | None] = {}
        routes: dict[str, str | None] = {}
        auth: dict[str, str | None] = {}
        resources: dict[str, str | None] = {}
        services: dict[str, str | None] = {}
        wanted: tuple[frozenset[str], ...] = (frozenset(), frozenset(), frozenset(), frozenset())
        certificates = False
        for _ in range(MAX_CHANGE_READS):
            read = await read_changes(
                runtime.redis, cursor, proxies=wanted[0], routes=wanted[1], auth=wanted[2], services=wanted[3]
            )
            proxies.update(read.proxies)
            routes.update(read.routes)
            auth.update(read.auth)
            resources.update(read.resources)
            services.update(read.services)
            if not read.entries:
                # Nothing happened since the rows were read: they are the state of `version`, unless the
                # version moved without an event (a gap only a full reload can close).
                if read.version != version:
                    return False
                break
            changes = collect(read.entries, after_version=version)
            if changes is None or changes.last_version != read.version:
                return False
            certificates |= changes.certificates
            cursor, version, wanted = changes.last_id, changes.last_version, changes.names
        else:
            return False
        if version == runtime.table.version:
            return True  # a wake-up for a version already applied
        table = self._tables.apply(
            version,
            parse_rows(ProxyTarget, proxies, "proxy"),
            parse_rows(Route, routes, "route"),
            parse_rows(ServiceEndpoint, services, "service endpoint"),
        )
        tables = self._auth.apply(auth, resources, read.jwks)
        for reason in tables.skipped:
            log.warning("auth config skipped: %s", reason)
        if certificates and runtime.certificates is not None:
            await runtime.certificates.refresh()
        runtime.swap(table, tables, read.jwks)
        self._cursor = cursor
        runtime.metrics.count_reload("success")
        runtime.metrics.count_apply("changes")
        log.debug(
            "config version %d applied: %d proxies, %d routes, %d auth rows re-read",
            version,
            len(proxies),
            len(routes),
            len(auth),
        )
        return True


async def refresh_revocation_state(runtime: Runtime, loader: ConfigLoader) -> None:
    """Re-read the revoked set and the JWKS; a changed JWKS (written without an event by a control plane
    that predates the key ring's change events) brings the tables up to date too."""
    jwks_raw, revoked = await read_revocation_state(runtime.redis)
    runtime.revoked = revoked
    if jwks_raw != runtime.jwks_raw:
        log.info("signing keys changed; reloading")
        await loader.reload()


class ConfigSync:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._reconcile_seconds = runtime.settings.RECONCILE_INTERVAL_SECONDS
        self.loader = ConfigLoader(runtime)

    async def run(self) -> None:
        runtime = self._runtime
        backoff = BACKOFF_INITIAL_SECONDS
        while not runtime.draining:
            pubsub = runtime.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(keys.changes_channel(), keys.oauth_revocations_channel())
                await self.loader.reload()
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
                        await self.loader.refresh()
            if loop.time() >= next_revocations:
                next_revocations = loop.time() + REVOCATION_RECONCILE_SECONDS
                await refresh_revocation_state(runtime, self.loader)
            if loop.time() >= next_reconcile:
                next_reconcile = loop.time() + self._reconcile_seconds
                if await read_version(runtime.redis) != runtime.table.version:
                    await self.loader.refresh()
