"""A Redis Streams consumer in a consumer group: the workflow engine of the control plane's controllers
(ACME issuance in acme/workflow.py, Docker services in docker/workflow.py).

Every control-plane replica runs one consumer per workflow; XREADGROUP hands each event to one replica,
which XACKs it once handled (handled includes "failed and recorded"). Events left pending by a crashed
replica are taken over with XAUTOCLAIM after `claim_idle_seconds`. Handlers must be idempotent: a
redelivered or duplicate event has to cost a read, not a second side effect.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import ResponseError

log = logging.getLogger(__name__)

WORKFLOW_STREAM_MAXLEN = 10_000

Event = TypeVar("Event")


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


async def append_event(redis: aioredis.Redis, stream: str, fields: dict[str, str]) -> str:
    """Append one event to a workflow stream (bounded); returns its stream id."""
    entry_id = await redis.xadd(
        stream,
        fields,  # type: ignore[arg-type]
        maxlen=WORKFLOW_STREAM_MAXLEN,
        approximate=True,
    )
    return str(entry_id)


class StreamConsumer(Generic[Event]):
    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        stream: str,
        group: str,
        parse: Callable[[dict[str, str]], Event],
        handler: Callable[[Event], Awaitable[object]],
        name: str | None = None,
        claim_idle_seconds: float = 600.0,
        # Well under the Redis client's socket timeout (redis-py defaults to 5 s), or a quiet stream would
        # look like a dead connection.
        block_seconds: float = 2.0,
        batch_size: int = 8,
    ) -> None:
        self._redis = redis
        self._stream = stream
        self._group = group
        self._parse = parse
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
            await self._redis.xgroup_create(self._stream, self._group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):  # the group exists already: another replica made it
                raise
        self._group_ready = True

    async def run_once(self, *, block: bool = True) -> int:
        """Handle reclaimed events, then new ones (waiting up to block_seconds); returns how many."""
        await self.ensure_group()
        batch = await self._autoclaim()
        response: Any = await self._redis.xreadgroup(
            self._group,
            self.name,
            {self._stream: ">"},
            count=self._batch_size,
            block=None if batch or not block else self._block_ms,
        )
        for _stream, entries in response or []:
            batch.extend(entries)
        # Events of one batch run concurrently (an order or an image pull can take minutes; other items
        # should not queue behind it). The batch size bounds the concurrency.
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
            self._stream,
            self._group,
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
                log.warning("took over %s event %s from a consumer that stopped", self._stream, entry_id)
                out.append((entry_id, fields))
        return out

    async def _handle(self, entry_id: str, fields: dict[str, str]) -> None:
        try:
            event = self._parse(fields)
        except (ValidationError, ValueError) as exc:
            log.error("dropping malformed %s event %s: %s", self._stream, entry_id, exc)
            await self._ack(entry_id)
            return
        # Not acknowledged when the handler raises: the event stays pending and XAUTOCLAIM retries it after
        # claim_idle_seconds (a slow, bounded retry rather than a tight loop).
        await self._handler(event)
        await self._ack(entry_id)

    async def _ack(self, entry_id: str) -> None:
        await self._redis.xack(self._stream, self._group, entry_id)
