"""Lease locks in Redis, so that of several control-plane replicas only one works on an item at a time:
ACME issuance per domain (acme/issuer.py), the service controller per service (docker/controller.py).

A lock is `SET <key(item)> <owner id> NX PX <lease>`; while the holder works a keeper task extends the lease
(compare-and-pexpire), and release is compare-and-delete, both as Lua scripts so another replica's lock is
never touched. A crashed holder's lock simply expires. Several items (the domains of one certificate) are
taken in sorted order (no two holders can deadlock), all or none.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

LOCK_POLL_SECONDS = 0.25


class LockBusy(Exception):
    """Another holder kept the lock for longer than we were willing to wait."""


class LockLost(Exception):
    """Our lease expired or was taken over while we worked; the work must not be committed."""


class LeaseLocks:
    """Take, keep and release the locks of a set of items; `key` names an item's lock, `what` says in logs
    and errors what the lock guards."""

    def __init__(
        self, redis: aioredis.Redis, *, key: Callable[[str], str], lease_seconds: float, what: str
    ) -> None:
        self._redis = redis
        self._key = key
        self._what = what
        self._lease_ms = max(1000, int(lease_seconds * 1000))

    async def _try_acquire(self, items: list[str], owner: str) -> bool:
        taken: list[str] = []
        for item in items:
            if await self._redis.set(self._key(item), owner, nx=True, px=self._lease_ms):
                taken.append(item)
            else:
                await self._release(taken, owner)
                return False
        return True

    async def _release(self, items: list[str], owner: str) -> None:
        for item in items:
            await self._redis.eval(_RELEASE, 1, self._key(item), owner)

    async def _renew(self, items: list[str], owner: str) -> bool:
        for item in items:
            ok = await self._redis.eval(_RENEW, 1, self._key(item), owner, str(self._lease_ms))
            if not ok:
                return False
        return True

    @asynccontextmanager
    async def hold(self, items: list[str], *, wait_seconds: float) -> AsyncIterator[asyncio.Event]:
        """Hold every item's lock for the body; yields an Event that is set if the lease is lost.

        Raises LockBusy after `wait_seconds` without getting all of them.
        """
        ordered = sorted(set(items))
        owner = secrets.token_hex(16)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        while not await self._try_acquire(ordered, owner):
            if loop.time() >= deadline:
                raise LockBusy(f"{self._what} lock for {', '.join(ordered)} is held by another replica")
            await asyncio.sleep(LOCK_POLL_SECONDS)
        lost = asyncio.Event()
        keeper = asyncio.create_task(self._keep(ordered, owner, lost), name=f"lock-keeper:{ordered[0]}")
        try:
            yield lost
        finally:
            keeper.cancel()
            # wait() rather than `await keeper`: the keeper's CancelledError must not mask our own.
            await asyncio.wait([keeper])
            await self._release(ordered, owner)

    async def _keep(self, items: list[str], owner: str, lost: asyncio.Event) -> None:
        interval = self._lease_ms / 3000
        while True:
            await asyncio.sleep(interval)
            try:
                still_ours = await self._renew(items, owner)
            except (OSError, RedisError) as exc:
                # One failed renewal is survivable (the lease still has two thirds left); keep trying.
                log.warning("could not renew the %s lock for %s: %r", self._what, items, exc)
                continue
            if not still_ours:
                log.error("%s lock for %s was lost; abandoning this attempt", self._what, items)
                lost.set()
                return
