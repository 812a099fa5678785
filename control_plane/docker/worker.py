"""What the control plane runs in the background for services, in every replica:

- the workflow consumer: converges the service named by each event (one replica per event; the service's
  lease lock keeps two replicas off one service);
- the reconcile scan: every SERVICE_RECONCILE_INTERVAL_SECONDS one replica (a short Redis lock) queues a
  converge for every service and for every container of this deployment whose service is gone (orphans),
  and frees leaked port allocations. It also runs at start, so a restarted control plane adopts what runs;
- the engine-events follower: one replica at a time (a lease) follows the engine's container events and
  queues a converge for the service concerned, so `die`, `oom`, health changes and restarts reach the
  status within moments. Each (re)connection first queues a full reconcile, for what happened unwatched.

Without DOCKER_URL only the port reclaim runs.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

import redis.asyncio as aioredis

from shared import keys
from shared.config import Settings

from ..background import BackgroundLoops
from ..lease_locks import LeaseLocks, LockBusy
from ..services.port_allocator import PortAllocator
from ..store import Store
from .container_config import LABEL_SERVICE, our_labels
from .controller import ServiceController
from .engine import Engine, EngineUnavailable
from .workflow import ServiceConsumer, ServiceEvent, request_converge

log = logging.getLogger(__name__)

# Engine events that change what a service's status says; exec_* (healthcheck runs) and the like do not.
RELEVANT_ACTIONS = frozenset(
    {
        "create",
        "start",
        "restart",
        "die",
        "oom",
        "kill",
        "stop",
        "destroy",
        "pause",
        "unpause",
        "health_status",
    }
)
EVENTS_LEASE_SECONDS = 15.0


class ServiceWorker:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        ports: PortAllocator,
        *,
        engine: Engine | None,
        controller: ServiceController | None,
    ) -> None:
        self._store = store
        self._redis: aioredis.Redis = store.redis
        self._settings = settings
        self._ports = ports
        self._engine = engine
        self.controller = controller
        self.loops = BackgroundLoops(expected=(EngineUnavailable,))
        # A short block: stopping waits for the blocking read to return (see background.py), and an idle
        # read a second per replica costs Redis nothing.
        self.consumer = ServiceConsumer(
            self._redis,
            self._handle,
            claim_idle_seconds=settings.SERVICE_CLAIM_IDLE_SECONDS,
            block_seconds=1.0,
            max_deliveries=settings.WORKFLOW_MAX_DELIVERIES,
        )
        self._leader = LeaseLocks(
            self._redis,
            key=lambda _item: keys.service_events_leader(),
            lease_seconds=EVENTS_LEASE_SECONDS,
            what="engine-events follower",
        )
        self._scan_token = secrets.token_hex(8)

    def start(self) -> None:
        self.loops.add("service-reconcile", self._reconcile_step)
        if self.controller is not None:
            self.loops.add("service-consumer", self._consume_step)
            self.loops.add("service-engine-events", self._events_step)
        self.loops.start()

    async def stop(self) -> None:
        await self.loops.stop()

    async def _consume_step(self) -> None:
        await self.consumer.run_once()

    async def _handle(self, event: ServiceEvent) -> None:
        assert self.controller is not None
        log.debug("converging service %s (%s)", event.name, event.reason)
        await self.controller.converge(event.name)

    async def reconcile_all(self, reason: str) -> int:
        """Queue a converge for every service and every orphan container's service; returns how many."""
        names = set(await self._redis.hkeys(keys.services()))
        if self.controller is not None and self._engine is not None:
            deployment = await self.controller.deployment()
            for container in await self._engine.list_containers(our_labels(deployment)):
                name = container.labels.get(LABEL_SERVICE)
                if name:
                    names.add(name)
        for name in sorted(names):
            await request_converge(self._redis, name, reason)
        return len(names)

    async def _reconcile_step(self) -> None:
        interval = self._settings.SERVICE_RECONCILE_INTERVAL_SECONDS
        got = await self._redis.set(
            keys.service_reconcile_lock(), self._scan_token, nx=True, px=max(1, int(interval * 900))
        )
        if got:
            await self._ports.reclaim_leaked(
                self._store.reader, grace_seconds=self._settings.PORT_RECONCILE_GRACE_SECONDS
            )
            if self.controller is not None:
                count = await self.reconcile_all("periodic reconcile")
                log.debug("reconcile queued %d service(s)", count)
        await self.loops.pause(interval)

    async def _events_step(self) -> None:
        try:
            async with self._leader.hold(["events"], wait_seconds=0) as lease_lost:
                follow = asyncio.create_task(self._follow_events(), name="service-engine-events-stream")
                lost = asyncio.create_task(lease_lost.wait())
                stopping = asyncio.create_task(self.loops.stopping.wait())
                try:
                    await asyncio.wait({follow, lost, stopping}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for task in (follow, lost, stopping):
                        task.cancel()
                    await asyncio.wait({follow, lost, stopping})
                if not follow.cancelled() and (error := follow.exception()) is not None:
                    raise error
        except LockBusy:
            await self.loops.pause(EVENTS_LEASE_SECONDS / 3)  # another replica follows the events

    async def _follow_events(self) -> None:
        assert self._engine is not None and self.controller is not None
        labels = our_labels(await self.controller.deployment())
        # What happened while nobody followed (a restart of this replica or of the engine) is caught by a
        # full reconcile first; the periodic one covers the moment between it and the subscription.
        await self.reconcile_all("engine events (re)connected")
        async for event in self._engine.events(labels):
            action = str(event.get("Action") or event.get("status") or "").split(":", 1)[0]
            actor = event.get("Actor")
            attributes = actor.get("Attributes", {}) if isinstance(actor, dict) else {}
            name = attributes.get(LABEL_SERVICE) if isinstance(attributes, dict) else None
            if action in RELEVANT_ACTIONS and isinstance(name, str) and name:
                await request_converge(self._redis, name, f"engine: {action}")
        log.warning("the engine closed its event stream; reconnecting")
