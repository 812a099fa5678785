"""The certificate worker the control-plane lifespan runs: the workflow consumer plus two scheduler loops.

Each loop has one last-resort handler: an unexpected error (Redis down, a bug) is logged with its traceback
and the loop waits before trying again, growing the pause up to a minute, so the app never dies and never
spins. Stopping cancels the loops; an event being handled when that happens stays pending in the stream and
is taken over by another replica (XAUTOCLAIM).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from shared.config import Settings
from shared.encryption import EncryptionError, Keyring
from shared.models import CertificateWanted

from ..services.certificates import CertificateService
from ..store import Store
from .issuer import Issuer, Outcome
from .scheduler import Scheduler
from .workflow import WorkflowConsumer

log = logging.getLogger(__name__)

MAX_ERROR_PAUSE_SECONDS = 60.0
# Retry scans are cheap (one HGETALL); this bounds how late a retry can run after its next_retry_at.
MAX_RETRY_SCAN_INTERVAL_SECONDS = 30.0
# Longer than one blocking XREADGROUP (WorkflowConsumer's block_seconds), so an idle consumer stops by itself.
STOP_GRACE_SECONDS = 3.0


class CertificateWorker:
    def __init__(self, store: Store, settings: Settings, certificates: CertificateService) -> None:
        self._settings = settings
        self.issuer = Issuer(store, settings)
        self._certificates = certificates
        self.consumer = WorkflowConsumer(
            store.redis,
            self.handle,
            claim_idle_seconds=settings.ACME_ORDER_TIMEOUT_SECONDS + 2 * settings.ACME_LOCK_LEASE_SECONDS,
        )
        # A certificate untouched for longer than an order plus a lock lease has no attempt in flight.
        self.scheduler = Scheduler(
            store,
            renew_before_seconds=self.issuer.renew_before_seconds,
            stale_after_seconds=settings.ACME_ORDER_TIMEOUT_SECONDS + 2 * settings.ACME_LOCK_LEASE_SECONDS,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    async def handle(self, event: CertificateWanted) -> Outcome | None:
        name: str | None = event.cert_name
        if event.reason == "proxy":
            name = await self._certificates.ensure_for_proxy(event.hostname)
        if not name:
            return None
        outcome = await self.issuer.ensure(name)
        log.debug("workflow event %s for %s: %s", event.reason, name, outcome)
        return outcome

    def start(self) -> None:
        renewal_interval = self._settings.ACME_RENEWAL_CHECK_INTERVAL_SECONDS
        retry_interval = min(self._settings.ACME_RETRY_BASE_SECONDS / 2, MAX_RETRY_SCAN_INTERVAL_SECONDS)
        self._tasks = [
            asyncio.create_task(self._loop("acme-consumer", self._consume), name="acme-consumer"),
            asyncio.create_task(
                self._loop("acme-renewal-scan", self._periodic(renewal_interval, renewals=True)),
                name="acme-renewal-scan",
            ),
            asyncio.create_task(
                self._loop("acme-retry-scan", self._periodic(max(retry_interval, 0.5), renewals=False)),
                name="acme-retry-scan",
            ),
        ]

    async def stop(self) -> None:
        """Stop cooperatively first, then cancel what is still running after a grace period.

        Cancelling a task while redis-py is blocked in XREADGROUP can leave it waiting on the socket (the
        cancellation races the client's own read timeout on Python 3.11), so the loops are asked to stop
        and get one blocking read's time to do so; only an order still in flight is cancelled.
        """
        self._stopping.set()
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(self._tasks, timeout=STOP_GRACE_SECONDS)
        for task in pending:
            task.cancel()
        if pending:
            _done, stuck = await asyncio.wait(pending, timeout=STOP_GRACE_SECONDS)
            for task in stuck:
                log.error("certificate worker task %s did not stop; abandoning it", task.get_name())
        self._tasks = []

    async def _consume(self) -> None:
        await self.consumer.run_once()

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when the worker is asked to stop."""
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            pass

    def _periodic(self, interval: float, *, renewals: bool) -> Callable[[], Awaitable[None]]:
        async def tick() -> None:
            await self.scheduler.scan(renewals=renewals, lock_seconds=interval * 0.9)
            await self._pause(interval)

        return tick

    async def _loop(self, name: str, step: Callable[[], Awaitable[None]]) -> None:
        pause = 1.0
        while not self._stopping.is_set():
            try:
                await step()
                pause = 1.0
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed; retrying in %.0fs", name, pause)
                await self._pause(pause)
                pause = min(pause * 2, MAX_ERROR_PAUSE_SECONDS)


def start_certificate_worker(
    store: Store, settings: Settings, certificates: CertificateService
) -> CertificateWorker | None:
    """Start the worker for the app lifespan, unless disabled or unable to store private keys."""
    if not settings.ACME_WORKER_ENABLED:
        log.info("certificate worker disabled (ACME_WORKER_ENABLED=false)")
        return None
    try:
        Keyring.from_settings(settings)
    except EncryptionError as exc:
        log.warning("certificate worker not started: %s", exc)
        return None
    worker = CertificateWorker(store, settings, certificates)
    worker.start()
    return worker
