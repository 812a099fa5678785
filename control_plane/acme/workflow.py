"""The "certificate wanted" workflow: CertificateWanted events on `{mhp}:acme-workflow`, consumed by the
consumer group `acme-workers` (control_plane/stream_consumer.py: one replica per event, XAUTOCLAIM takeover
of a crashed replica's events). Producers are the certificates API, proxy create/update with HTTPS and the
scheduler. Handlers are idempotent (the issuer re-checks under a lock), so a redelivered or duplicate event
costs a read, not an order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from control_plane.records import CertificateWanted
from shared import keys

from ..stream_consumer import StreamConsumer, append_event

Handler = Callable[[CertificateWanted], Awaitable[object]]


async def request_certificate(redis: aioredis.Redis, event: CertificateWanted) -> str:
    """Append one event; returns its stream id."""
    return await append_event(redis, keys.acme_workflow_stream(), event.to_stream_fields())


class WorkflowConsumer(StreamConsumer[CertificateWanted]):
    def __init__(self, redis: aioredis.Redis, handler: Handler, **options: Any) -> None:
        super().__init__(
            redis,
            stream=keys.acme_workflow_stream(),
            group=keys.acme_workflow_group(),
            parse=CertificateWanted.from_stream_fields,
            handler=handler,
            **options,
        )
