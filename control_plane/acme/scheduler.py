"""Which certificates to (re)issue without anyone asking: expiring ones, failed ones whose backoff is over,
and HTTPS proxies that no certificate covers yet (e.g. a lost proxy event).

`due_events` is the pure decision; `Scheduler.scan` reads a snapshot and queues the events, taking a short
Redis lock so that with several control-plane replicas one of them scans per interval.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterable, Mapping

import redis.asyncio as aioredis

from control_plane.records import CertificateWanted
from shared import keys
from shared.hostnames import public_ca_refusal
from shared.models import Certificate, ProxyTarget

from .. import store
from ..store import Store
from .records import certificates, issuance_due, retry_due
from .workflow import request_certificate

log = logging.getLogger(__name__)


def due_events(
    certs: Mapping[str, Certificate],
    proxies: Iterable[ProxyTarget],
    *,
    now: float,
    renew_before_seconds: float,
    renewals: bool,
    stale_after_seconds: float = 600.0,
) -> list[CertificateWanted]:
    """Events to queue. With renewals=False only retries are considered (the frequent, cheap scan).

    A retry is due for a failed certificate whose backoff is over, and for one that has waited longer than
    `stale_after_seconds` without any attempt (its event was lost, e.g. Redis failed right after the API
    committed it); anything else that is due (expiry, proxies without a certificate) waits for the
    renewal scan.
    """
    events: list[CertificateWanted] = []
    covered: set[str] = set()
    for name, cert in sorted(certs.items()):
        covered.update(cert.domains)
        if issuance_due(cert, now, renew_before_seconds) is None or not retry_due(cert, now):
            continue
        forgotten = cert.next_retry_at is None and now - cert.updated_at > stale_after_seconds
        if cert.next_retry_at is not None or (forgotten and not cert.has_chain):
            events.append(CertificateWanted(reason="retry", cert_name=name, at=now))
        elif renewals:
            events.append(CertificateWanted(reason="schedule", cert_name=name, at=now))
    if renewals:
        for proxy in proxies:
            wants = proxy.enable_https and public_ca_refusal(proxy.hostname) is None
            if wants and proxy.hostname not in covered:
                events.append(CertificateWanted(reason="proxy", hostname=proxy.hostname, at=now))
    return events


class Scheduler:
    def __init__(
        self, store_: Store, *, renew_before_seconds: float, stale_after_seconds: float = 600.0
    ) -> None:
        self._store = store_
        self._redis: aioredis.Redis = store_.redis
        self._renew_before_seconds = renew_before_seconds
        self._stale_after_seconds = stale_after_seconds

    async def scan(self, *, renewals: bool, lock_seconds: float) -> int:
        """Queue what is due; returns the number of events (0 when another replica holds this scan)."""
        kind = "renewal" if renewals else "retry"
        # One scan per kind per interval across replicas. The lock is never released early: it expires, so
        # replicas that wake a little later skip the same interval.
        got = await self._redis.set(
            keys.acme_scheduler_lock(kind), secrets.token_hex(8), nx=True, px=max(1, int(lock_seconds * 1000))
        )
        if not got:
            return 0
        certs = await self._store.reader.all(certificates())
        proxies = (await self._store.reader.all(store.proxies())).values() if renewals else ()
        events = due_events(
            certs,
            proxies,
            now=time.time(),
            renew_before_seconds=self._renew_before_seconds,
            renewals=renewals,
            stale_after_seconds=self._stale_after_seconds,
        )
        for event in events:
            await request_certificate(self._redis, event)
        if events:
            log.info("%s scan queued %d certificate event(s)", kind, len(events))
        return len(events)
