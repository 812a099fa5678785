"""Per-domain issuance locks, so that several control-plane replicas never issue the same name twice: lease
locks (control_plane/lease_locks.py) on `{mhp}:acme-lock:<domain>`."""

from __future__ import annotations

import redis.asyncio as aioredis

from shared import keys

from ..lease_locks import LeaseLocks, LockBusy, LockLost

__all__ = ["DomainLocks", "LockBusy", "LockLost"]


class DomainLocks(LeaseLocks):
    def __init__(self, redis: aioredis.Redis, *, lease_seconds: float) -> None:
        super().__init__(redis, key=keys.acme_lock, lease_seconds=lease_seconds, what="issuance")
