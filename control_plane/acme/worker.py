"""The certificate worker the control-plane lifespan runs: the workflow consumer plus two scheduler loops,
run as control_plane/background.py loops (an unexpected error is logged with its traceback and the loop
pauses, growing the pause up to a minute, so the app never dies and never spins). Stopping asks the loops
to finish; an event being handled when that happens stays pending in the stream and is taken over by
another replica (XAUTOCLAIM).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from control_plane.records import CertificateWanted
from shared.config import Settings
from shared.encryption import EncryptionError, Keyring

from ..background import BackgroundLoops
from ..services.certificates import CertificateService
from ..store import Store
from .issuer import Issuer, Outcome
from .scheduler import Scheduler
from .workflow import WorkflowConsumer

log = logging.getLogger(__name__)

# Retry scans are cheap (one HGETALL); this bounds how late a retry can run after its next_retry_at.
MAX_RETRY_SCAN_INTERVAL_SECONDS = 30.0


class CertificateWorker:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        certificates: CertificateService,
        *,
        on_outcome: Callable[[str], object] | None = None,
    ) -> None:
        self._settings = settings
        # e.g. ControlPlaneMetrics.count_acme_outcome, with each issuance's Outcome.
        self._on_outcome = on_outcome
        self.issuer = Issuer(store, settings)
        self._certificates = certificates
        self.consumer = WorkflowConsumer(
            store.redis,
            self.handle,
            claim_idle_seconds=settings.ACME_ORDER_TIMEOUT_SECONDS + 2 * settings.ACME_LOCK_LEASE_SECONDS,
            max_deliveries=settings.WORKFLOW_MAX_DELIVERIES,
        )
        # A certificate untouched for longer than an order plus a lock lease has no attempt in flight.
        self.scheduler = Scheduler(
            store,
            renew_before_seconds=self.issuer.renew_before_seconds,
            stale_after_seconds=settings.ACME_ORDER_TIMEOUT_SECONDS + 2 * settings.ACME_LOCK_LEASE_SECONDS,
        )
        self.loops = BackgroundLoops()

    async def handle(self, event: CertificateWanted) -> Outcome | None:
        name: str | None = event.cert_name
        if event.reason == "proxy":
            name = await self._certificates.ensure_for_proxy(event.hostname)
        if not name:
            return None
        outcome = await self.issuer.ensure(name)
        log.debug("workflow event %s for %s: %s", event.reason, name, outcome)
        if self._on_outcome is not None:
            self._on_outcome(outcome.value)
        return outcome

    def start(self) -> None:
        renewal_interval = self._settings.ACME_RENEWAL_CHECK_INTERVAL_SECONDS
        retry_interval = min(self._settings.ACME_RETRY_BASE_SECONDS / 2, MAX_RETRY_SCAN_INTERVAL_SECONDS)
        self.loops.add("acme-consumer", self._consume)
        self.loops.add("acme-renewal-scan", self._periodic(renewal_interval, renewals=True))
        self.loops.add("acme-retry-scan", self._periodic(max(retry_interval, 0.5), renewals=False))
        self.loops.start()

    async def stop(self) -> None:
        """Stop cooperatively first, then cancel what is still running after a grace period.

        Cancelling a task while redis-py is blocked in XREADGROUP can leave it waiting on the socket (the
        cancellation races the client's own read timeout on Python 3.11), so the loops are asked to stop
        and get one blocking read's time to do so; only an order still in flight is cancelled.
        """
        await self.loops.stop()

    async def _consume(self) -> None:
        await self.consumer.run_once()

    def _periodic(self, interval: float, *, renewals: bool) -> Callable[[], Awaitable[None]]:
        async def tick() -> None:
            await self.scheduler.scan(renewals=renewals, lock_seconds=interval * 0.9)
            await self.loops.pause(interval)

        return tick


def start_certificate_worker(
    store: Store,
    settings: Settings,
    certificates: CertificateService,
    *,
    on_outcome: Callable[[str], object] | None = None,
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
    worker = CertificateWorker(store, settings, certificates, on_outcome=on_outcome)
    worker.start()
    return worker
