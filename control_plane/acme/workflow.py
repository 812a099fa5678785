"""The "certificate wanted" workflow on a Redis Stream with a consumer group.

Producers (the certificates API, proxy create/update with HTTPS, the scheduler) XADD a CertificateWanted
event. Every control-plane replica runs a consumer in group `acme-workers`: XREADGROUP hands each event to
one replica, which XACKs it once handled (handled includes "failed and recorded for retry"). Events left
pending by a crashed replica are taken over with XAUTOCLAIM after `claim_idle_seconds`. Handlers are
idempotent (the issuer re-checks under a lock), so a redelivered or duplicate event costs a read, not an
order.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import ResponseError

from shared import keys
from shared.models import CertificateWanted

log = logging.getLogger(__name__)

WORKFLOW_STREAM_MAXLEN = 10_000

Handler = Callable[[CertificateWanted], Awaitable[object]]


async def request_certificate(redis: aioredis.Redis, event: CertificateWanted) -> str:
    """Append one event; returns its stream id."""
    entry_id = await redis.xadd(
        keys.acme_workflow_stream(),
        event.to_stream_fields(),  # type: ignore[arg-type]
        maxlen=WORKFLOW_STREAM_MAXLEN,
        approximate=True,
    )
    return str(entry_id)


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class WorkflowConsumer:
    def __init__(
        self,
        redis: aioredis.Redis,
        handler: Handler,
        *,
        name: str | None = None,
        claim_idle_seconds: float = 600.0,
        # Well under the Redis client's socket timeout (redis-py defaults to 5 s), or a quiet stream would
        # look like a dead connection.
        block_seconds: float = 2.0,
        batch_size: int = 8,
    ) -> None:
        self._redis = redis
        self._handler = handler
        self.name = name or consumer_name()
        self._claim_idle_ms = int(claim_idle_seconds * 1000)
        self._block_ms = max(1, int(block_seconds * 1000))
        self._group_ready = False
        self._batch_size = batch_size

    async def ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self._redis.xgroup_create(
                keys.acme_workflow_stream(), keys.acme_workflow_group(), id="0", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):  # the group exists already: another replica made it
                raise
        self._group_ready = True

    async def run_once(self, *, block: bool = True) -> int:
        """Handle reclaimed events, then new ones (waiting up to block_seconds); returns how many."""
        await self.ensure_group()
        batch = await self._autoclaim()
        response: Any = await self._redis.xreadgroup(
            keys.acme_workflow_group(),
            self.name,
            {keys.acme_workflow_stream(): ">"},
            count=self._batch_size,
            block=None if batch or not block else self._block_ms,
        )
        for _stream, entries in response or []:
            batch.extend(entries)
        # Events of one batch run concurrently (an order can take minutes; other certificates should not
        # queue behind it). The batch size bounds the concurrency.
        results = await asyncio.gather(
            *(self._handle(entry_id, fields) for entry_id, fields in batch), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        for failure in failures[1:]:
            log.error("workflow handler failed", exc_info=failure)
        if failures:
            raise failures[0]
        return len(batch)

    async def _autoclaim(self) -> list[tuple[str, dict[str, str]]]:
        result: Any = await self._redis.xautoclaim(
            keys.acme_workflow_stream(),
            keys.acme_workflow_group(),
            self.name,
            min_idle_time=self._claim_idle_ms,
            start_id="0-0",
            count=self._batch_size,
        )
        # [next start id, [(id, fields) ...], [deleted ids]]; entries trimmed from the stream come back None.
        claimed = result[1] if result else []
        out: list[tuple[str, dict[str, str]]] = []
        for entry_id, fields in claimed:
            if fields is None:
                await self._ack(entry_id)
            else:
                log.warning("took over workflow event %s from a consumer that stopped", entry_id)
                out.append((entry_id, fields))
        return out

    async def _handle(self, entry_id: str, fields: dict[str, str]) -> None:
        try:
            event = CertificateWanted.from_stream_fields(fields)
        except ValidationError as exc:
            log.error("dropping malformed workflow event %s: %s", entry_id, exc)
            await self._ack(entry_id)
            return
        # Not acknowledged when the handler raises: the event stays pending and XAUTOCLAIM retries it after
        # claim_idle_seconds (a slow, bounded retry rather than a tight loop).
        await self._handler(event)
        await self._ack(entry_id)

    async def _ack(self, entry_id: str) -> None:
        await self._redis.xack(keys.acme_workflow_stream(), keys.acme_workflow_group(), entry_id)
