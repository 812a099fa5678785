"""A Redis Streams consumer in a consumer group: the workflow engine of the control plane's controllers
(ACME issuance in acme/workflow.py, Docker services in docker/workflow.py).

Every control-plane replica runs one consumer per workflow; XREADGROUP hands each event to one replica,
which XACKs it once handled (handled includes "failed and recorded" by the controller itself, as the ACME
issuer and the service controller do). Events left pending by a crashed replica are taken over with
XAUTOCLAIM after `claim_idle_seconds`. Handlers must be idempotent: a redelivered or duplicate event has to
cost a read, not a second side effect.

A handler that raises leaves its event pending (delivered again after `claim_idle_seconds`) and its error is
recorded in the workflow's failures hash (keys.workflow_failures); at the `max_deliveries`-th failed delivery
the event moves to the dead-letter stream (keys.workflow_dead_letters) with its last error, instead of being
retried forever. A malformed event goes there at once. `mhp workflow` (control_plane/services/workflows.py)
shows both and retries or drops their items.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, ValidationError
from redis.exceptions import RedisError, ResponseError

from shared import keys

log = logging.getLogger(__name__)

WORKFLOW_STREAM_MAXLEN = 10_000
DEAD_LETTER_MAXLEN = 1_000
MAX_ERROR_CHARS = 2_000
DEFAULT_MAX_DELIVERIES = 5


class WorkflowFailure(BaseModel):
    """The last failed delivery of a pending event (a value of the workflow's failures hash)."""

    model_config = ConfigDict(extra="ignore")
    error: str
    attempts: int
    failed_at: float
    consumer: str


def error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS]


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
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
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
        self._max_deliveries = max_deliveries
        self._failures = keys.workflow_failures(stream)
        self._dead_letters = keys.workflow_dead_letters(stream)

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
            log.error("malformed %s event %s, dead-lettered: %s", self._stream, entry_id, exc)
            await self._dead_letter(entry_id, fields, f"malformed event: {exc}"[:MAX_ERROR_CHARS], attempts=1)
            return
        # Not acknowledged when the handler raises: the event stays pending and XAUTOCLAIM retries it after
        # claim_idle_seconds (a slow, bounded retry rather than a tight loop), up to max_deliveries.
        try:
            await self._handler(event)
        except Exception as exc:
            try:
                await self._record_failure(entry_id, fields, exc)
            except RedisError as record_error:  # the handler's error is the one to raise
                log.warning(
                    "could not record the failure of %s event %s: %s", self._stream, entry_id, record_error
                )
            raise
        await self._ack(entry_id)

    async def _record_failure(self, entry_id: str, fields: dict[str, str], error: Exception) -> None:
        pending: Any = await self._redis.xpending_range(
            self._stream, self._group, min=entry_id, max=entry_id, count=1
        )
        attempts = int(pending[0]["times_delivered"]) if pending else 1
        if attempts >= self._max_deliveries:
            log.error(
                "%s event %s failed %d deliveries, dead-lettered: %s", self._stream, entry_id, attempts, error
            )
            await self._dead_letter(entry_id, fields, error_text(error), attempts=attempts)
            return
        failure = WorkflowFailure(
            error=error_text(error), attempts=attempts, failed_at=time.time(), consumer=self.name
        )
        await self._redis.hset(self._failures, entry_id, failure.model_dump_json())

    async def _dead_letter(self, entry_id: str, fields: dict[str, str], error: str, *, attempts: int) -> None:
        """Move the event to the dead-letter stream with its last error, in one transaction."""
        letter = {
            "original_id": entry_id,
            "event": json.dumps(fields, sort_keys=True),
            "error": error,
            "attempts": str(attempts),
            "failed_at": repr(time.time()),
            "consumer": self.name,
        }
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self._dead_letters, letter, maxlen=DEAD_LETTER_MAXLEN, approximate=True)  # type: ignore[arg-type]
            pipe.xack(self._stream, self._group, entry_id)
            pipe.xdel(self._stream, entry_id)
            pipe.hdel(self._failures, entry_id)
            await pipe.execute()

    async def _ack(self, entry_id: str) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xack(self._stream, self._group, entry_id)
            pipe.hdel(self._failures, entry_id)  # a no-op unless an earlier delivery failed
            await pipe.execute()
