"""Per-domain issuance locks in Redis, so that several control-plane replicas never issue the same name twice.

A lock is `SET {mhp}:acme-lock:<domain> <owner id> NX PX <lease>`; while the holder works a keeper task
extends the lease (compare-and-pexpire), and release is compare-and-delete, both as Lua scripts so another
replica's lock is never touched. A crashed holder's lock simply expires. A multi-domain certificate takes its
domains' locks in sorted order (no two holders can deadlock) and holds all or none.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared import keys

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


class DomainLocks:
    """Take, keep and release the locks of a set of domains."""

    def __init__(self, redis: aioredis.Redis, *, lease_seconds: float) -> None:
        self._redis = redis
        self._lease_ms = max(1000, int(lease_seconds * 1000))

    async def _try_acquire(self, domains: list[str], owner: str) -> bool:
        taken: list[str] = []
        for domain in domains:
            if await self._redis.set(keys.acme_lock(domain), owner, nx=True, px=self._lease_ms):
                taken.append(domain)
            else:
                await self._release(taken, owner)
                return False
        return True

    async def _release(self, domains: list[str], owner: str) -> None:
        for domain in domains:
            await self._redis.eval(_RELEASE, 1, keys.acme_lock(domain), owner)

    async def _renew(self, domains: list[str], owner: str) -> bool:
        for domain in domains:
            ok = await self._redis.eval(_RENEW, 1, keys.acme_lock(domain), owner, str(self._lease_ms))
            if not ok:
                return False
        return True

    @asynccontextmanager
    async def hold(self, domains: list[str], *, wait_seconds: float) -> AsyncIterator[asyncio.Event]:
        """Hold every domain's lock for the body; yields an Event that is set if the lease is lost.

        Raises LockBusy after `wait_seconds` without getting all of them.
        """
        ordered = sorted(set(domains))
        owner = secrets.token_hex(16)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        while not await self._try_acquire(ordered, owner):
            if loop.time() >= deadline:
                raise LockBusy(f"issuance lock for {', '.join(ordered)} is held by another issuer")
            await asyncio.sleep(LOCK_POLL_SECONDS)
        lost = asyncio.Event()
        keeper = asyncio.create_task(self._keep(ordered, owner, lost), name=f"acme-lock-keeper:{ordered[0]}")
        try:
            yield lost
        finally:
            keeper.cancel()
            # wait() rather than `await keeper`: the keeper's CancelledError must not mask our own.
            await asyncio.wait([keeper])
            await self._release(ordered, owner)

    async def _keep(self, domains: list[str], owner: str, lost: asyncio.Event) -> None:
        interval = self._lease_ms / 3000
        while True:
            await asyncio.sleep(interval)
            try:
                still_ours = await self._renew(domains, owner)
            except (OSError, RedisError) as exc:
                # One failed renewal is survivable (the lease still has two thirds left); keep trying.
                log.warning("could not renew the issuance lock for %s: %r", domains, exc)
                continue
            if not still_ours:
                log.error("issuance lock for %s was lost; abandoning this attempt", domains)
                lost.set()
                return
