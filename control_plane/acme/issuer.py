"""Bring one certificate to `active`: the issuance state machine every replica runs the same way.

    ensure(name): read -> not due / backing off? done. Otherwise take every domain's lock, READ AGAIN (another
    replica may have issued while we waited: that re-check is what prevents a double issue), run one ACME
    order, then commit the chain + encrypted key (status active) or the CA's error with the next retry time.

Commits go through Store.transact (they change what the data plane serves, so they bump the config version).
A failure never raises out of ensure(): it is recorded on the certificate and retried with exponential
backoff by the scheduler, so a broken CA or DNS never turns into a tight loop.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from shared import keys
from shared.config import Settings
from shared.encryption import EncryptionError, Keyring, certificate_key_context
from shared.models import Certificate

from ..store import ConfigWrite, Reader, Store
from .accounts import AccountStore
from .certificate_info import InvalidChain, new_key_and_csr, read_chain
from .lock import DomainLocks, LockBusy
from .order import AccountUnknown, AcmeEndpoint, AcmeFailure, run_order
from .records import certificates, issuance_due, put_certificate, retry_delay_seconds, retry_due

log = logging.getLogger(__name__)

SECONDS_PER_DAY = 86400.0


class Outcome(enum.StrEnum):
    ISSUED = "issued"
    NOT_DUE = "not-due"
    BACKING_OFF = "backing-off"
    GONE = "gone"
    FAILED = "failed"
    BUSY = "busy"


@dataclass(frozen=True, slots=True)
class IssuedChain:
    fullchain_pem: str
    private_key_encrypted: str


class Issuer:
    def __init__(self, store: Store, settings: Settings) -> None:
        self._store = store
        self._redis: aioredis.Redis = store.redis
        self._settings = settings
        self._locks = DomainLocks(self._redis, lease_seconds=settings.ACME_LOCK_LEASE_SECONDS)

    @property
    def renew_before_seconds(self) -> float:
        return self._settings.ACME_RENEW_BEFORE_DAYS * SECONDS_PER_DAY

    def _should_run(self, cert: Certificate | None, now: float) -> Outcome | None:
        if cert is None:
            return Outcome.GONE
        if issuance_due(cert, now, self.renew_before_seconds) is None:
            return Outcome.NOT_DUE
        if not retry_due(cert, now):
            return Outcome.BACKING_OFF
        return None

    async def ensure(self, cert_name: str) -> Outcome:
        cert = await self._store.reader.get(certificates(), cert_name)
        skip = self._should_run(cert, time.time())
        if skip is not None or cert is None:
            return skip or Outcome.GONE
        # Waiting up to a whole order's time is enough for the holder to finish (or its lease to expire).
        wait_seconds = self._settings.ACME_ORDER_TIMEOUT_SECONDS + self._settings.ACME_LOCK_LEASE_SECONDS
        try:
            async with self._locks.hold(cert.domains, wait_seconds=wait_seconds) as lease_lost:
                cert = await self._store.reader.get(certificates(), cert_name)
                skip = self._should_run(cert, time.time())
                if skip is not None or cert is None:
                    log.info("certificate %s: %s after taking the lock", cert_name, skip)
                    return skip or Outcome.GONE
                reason = issuance_due(cert, time.time(), self.renew_before_seconds)
                log.info("certificate %s: issuing for %s (%s)", cert_name, cert.domains, reason)
                try:
                    issued = await self._issue(cert, lease_lost)
                except (AcmeFailure, EncryptionError, InvalidChain) as exc:
                    detail = exc.detail if isinstance(exc, AcmeFailure) else str(exc)
                    log.warning("certificate %s: issuance failed: %s", cert_name, detail)
                    await self._record_failure(cert_name, detail)
                    return Outcome.FAILED
                except Exception as exc:
                    # A bug or an unexpected library error: record it like a CA failure so the certificate
                    # backs off instead of being retried on every event.
                    log.exception("certificate %s: unexpected error during issuance", cert_name)
                    await self._record_failure(cert_name, f"internal error: {type(exc).__name__}: {exc}")
                    return Outcome.FAILED
                await self._record_success(cert, issued)
                log.info("certificate %s: issued", cert_name)
                return Outcome.ISSUED
        except LockBusy:
            return Outcome.BUSY

    async def _issue(self, cert: Certificate, lease_lost: asyncio.Event) -> IssuedChain:
        keyring = Keyring.from_settings(self._settings)
        endpoint = AcmeEndpoint(cert.directory_url, self._settings.ACME_CA_BUNDLE or True)
        accounts = AccountStore(self._redis, keyring)
        material = await asyncio.to_thread(new_key_and_csr, cert.domains)
        deadline = time.time() + self._settings.ACME_ORDER_TIMEOUT_SECONDS
        for attempt in (1, 2):
            client, account_key = await accounts.client_for(endpoint, cert.email)
            try:
                fullchain = await run_order(
                    client,
                    account_key,
                    material.csr_pem,
                    publish=self._publish_challenge,
                    withdraw=self._withdraw_challenge,
                    deadline=deadline,
                    lease_lost=lease_lost,
                )
                break
            except AccountUnknown:
                if attempt == 2:
                    raise
                log.warning("ACME account for %s is unknown to the CA; registering a new one", cert.email)
                await accounts.forget(endpoint, cert.email)
        read_chain(fullchain, material.private_key_pem)  # refuse a chain that is unreadable or not ours
        return IssuedChain(
            fullchain_pem=fullchain,
            private_key_encrypted=keyring.encrypt(
                material.private_key_pem, context=certificate_key_context(cert.cert_name)
            ),
        )

    async def _publish_challenge(self, token: str, key_authorization: str) -> None:
        await self._redis.set(
            keys.acme_challenge(token), key_authorization, ex=self._settings.ACME_CHALLENGE_TTL_SECONDS
        )

    async def _withdraw_challenge(self, token: str) -> None:
        await self._redis.delete(keys.acme_challenge(token))

    async def _record_success(self, used: Certificate, issued: IssuedChain) -> None:
        info = read_chain(issued.fullchain_pem)
        now = time.time()

        async def plan(reader: Reader) -> ConfigWrite:
            write = ConfigWrite()
            current = await reader.get(certificates(), used.cert_name)
            if current is None:
                return write  # deleted while we worked: keep nothing
            new = current.model_copy(
                update={
                    "status": "active",
                    "error": "",
                    "fullchain_pem": issued.fullchain_pem,
                    "private_key_encrypted": issued.private_key_encrypted,
                    "issuer": info.issuer,
                    "serial": info.serial,
                    "not_before": info.not_before,
                    "not_after": info.not_after,
                    "fingerprint_sha256": info.fingerprint_sha256,
                    "issued_at": now,
                    "issued_domains": list(used.domains),
                    "issued_directory_url": used.directory_url,
                    "attempts": 0,
                    "next_retry_at": None,
                    "updated_at": now,
                }
            )
            put_certificate(write, new, previous=current)
            write.change("certificate", "updated", new.cert_name, new.owner)
            return write

        await self._store.transact(plan)

    async def _record_failure(self, cert_name: str, detail: str) -> None:
        now = time.time()

        async def plan(reader: Reader) -> ConfigWrite:
            write = ConfigWrite()
            current = await reader.get(certificates(), cert_name)
            if current is None:
                return write
            attempts = current.attempts + 1
            delay = retry_delay_seconds(
                attempts,
                base_seconds=self._settings.ACME_RETRY_BASE_SECONDS,
                max_seconds=self._settings.ACME_RETRY_MAX_SECONDS,
            )
            # A still-valid chain keeps being served, so the certificate stays active; the error is shown.
            still_valid = current.has_chain and (current.not_after or 0) > now
            new = current.model_copy(
                update={
                    "status": "active" if still_valid else "failed",
                    "error": detail[:4000],
                    "attempts": attempts,
                    "next_retry_at": now + delay,
                    "updated_at": now,
                }
            )
            put_certificate(write, new, previous=current)
            write.change("certificate", "updated", cert_name, new.owner)
            return write

        await self._store.transact(plan)
