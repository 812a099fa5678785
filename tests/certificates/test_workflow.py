"""The certificate workflow stream (consumer group, ack, takeover of a crashed consumer's events) and the
per-domain lock (lease, renewal while held, compare-and-delete), on a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from control_plane.acme.lock import DomainLocks, LockBusy
from control_plane.acme.workflow import WorkflowConsumer, request_certificate
from control_plane.records import CertificateWanted
from shared import keys

pytestmark = pytest.mark.certificates


async def pending_count(redis: aioredis.Redis) -> int:
    info = await redis.xpending(keys.acme_workflow_stream(), keys.acme_workflow_group())
    return int(info["pending"])


async def test_each_event_goes_to_one_consumer_and_is_acked(redis_client: aioredis.Redis) -> None:
    seen: dict[str, list[str]] = {"a": [], "b": []}

    def handler_for(name: str) -> Callable[[CertificateWanted], Awaitable[None]]:
        async def handle(event: CertificateWanted) -> None:
            seen[name].append(event.cert_name)

        return handle

    a = WorkflowConsumer(redis_client, handler_for("a"), name="a", block_seconds=0.05)
    b = WorkflowConsumer(redis_client, handler_for("b"), name="b", block_seconds=0.05)
    await a.ensure_group()
    await b.ensure_group()  # the second replica finds the group already there
    for index in range(6):
        await request_certificate(redis_client, CertificateWanted(reason="created", cert_name=f"c{index}"))
    await asyncio.gather(a.run_once(), b.run_once())
    await asyncio.gather(a.run_once(), b.run_once())
    assert sorted(seen["a"] + seen["b"]) == [f"c{i}" for i in range(6)]
    assert await pending_count(redis_client) == 0


async def test_crashed_consumer_events_are_taken_over(redis_client: aioredis.Redis) -> None:
    handled: list[str] = []

    async def crash(event: CertificateWanted) -> None:
        raise RuntimeError("replica died mid-event")

    async def handle(event: CertificateWanted) -> None:
        handled.append(event.cert_name)

    dying = WorkflowConsumer(redis_client, crash, name="dying", block_seconds=0.05)
    await dying.ensure_group()
    await request_certificate(redis_client, CertificateWanted(reason="created", cert_name="orphan"))
    with pytest.raises(RuntimeError):
        await dying.run_once()
    assert await pending_count(redis_client) == 1  # not acknowledged: still owned by the dead consumer

    patient = WorkflowConsumer(
        redis_client, handle, name="patient", claim_idle_seconds=3600, block_seconds=0.05
    )
    await patient.run_once()
    assert handled == []  # not idle long enough yet: a slow replica is not robbed

    rescuer = WorkflowConsumer(
        redis_client, handle, name="rescuer", claim_idle_seconds=0.05, block_seconds=0.05
    )
    await asyncio.sleep(0.1)
    await rescuer.run_once()
    assert handled == ["orphan"]
    assert await pending_count(redis_client) == 0


async def test_malformed_events_are_dropped_not_retried(redis_client: aioredis.Redis) -> None:
    handled: list[CertificateWanted] = []

    async def handle(event: CertificateWanted) -> None:
        handled.append(event)

    consumer = WorkflowConsumer(redis_client, handle, name="c", block_seconds=0.05)
    await consumer.ensure_group()
    await redis_client.xadd(keys.acme_workflow_stream(), {"reason": "nonsense", "junk": "1"})
    await request_certificate(redis_client, CertificateWanted(reason="renew", cert_name="ok"))
    assert await consumer.run_once() == 2
    assert [e.cert_name for e in handled] == ["ok"]
    assert await pending_count(redis_client) == 0


async def test_domain_locks_are_exclusive_renewed_and_released(redis_client: aioredis.Redis) -> None:
    locks = DomainLocks(redis_client, lease_seconds=1.0)
    async with locks.hold(["b.example.com", "a.example.com"], wait_seconds=0) as lost:
        owner = await redis_client.get(keys.acme_lock("a.example.com"))
        assert owner and owner == await redis_client.get(keys.acme_lock("b.example.com"))
        # Any overlap with a held domain is refused (all-or-nothing), and nothing is left half-taken.
        with pytest.raises(LockBusy):
            async with locks.hold(["c.example.com", "b.example.com"], wait_seconds=0.3):
                pass
        assert await redis_client.get(keys.acme_lock("c.example.com")) is None
        # Held past several leases: the keeper renews it.
        await asyncio.sleep(2.5)
        assert await redis_client.get(keys.acme_lock("a.example.com")) == owner
        assert not lost.is_set()
    assert await redis_client.get(keys.acme_lock("a.example.com")) is None


async def test_lock_lost_to_expiry_is_reported_and_release_spares_the_new_holder(
    redis_client: aioredis.Redis,
) -> None:
    locks = DomainLocks(redis_client, lease_seconds=1.0)
    async with locks.hold(["x.example.com"], wait_seconds=0) as lost:
        # Simulate a stall past the lease: someone else takes the name meanwhile.
        await redis_client.set(keys.acme_lock("x.example.com"), "someone-else", px=10_000)
        await asyncio.wait_for(lost.wait(), timeout=5)
    assert await redis_client.get(keys.acme_lock("x.example.com")) == "someone-else"
