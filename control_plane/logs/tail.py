"""Live tail: new request-log entries as Server-Sent Events, with the search filters.

Reads the stream with XREAD BLOCK from `$` (or from `after`, an id a previous tail ended on, so a client
resumes without a gap). Bounded three ways: it ends after `max_seconds` with an `end` event naming where
to resume; it stops within one block interval of the client going away; at most `max_streams` run per
control-plane replica (503 beyond). Each blocking read uses its own connection from the pool, held only
for one block interval. Comments (`: keep-alive`) flow while nothing matches, so proxies keep it open.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from shared import keys

from ..errors import Unavailable
from .entries import parse_entry
from .query import LogFilter

BLOCK_MS = 1000
KEEPALIVE_SECONDS = 15.0
READ_COUNT = 500


class TailSlots:
    """The per-replica bound on concurrent tails."""

    def __init__(self, max_streams: int) -> None:
        self._free = max_streams

    def check(self) -> None:
        """Refuse (503) before the response starts when no slot is free."""
        if self._free <= 0:
            raise Unavailable("too many live log tails on this control plane; try again later")

    def acquire(self) -> None:
        self._free -= 1

    def release(self) -> None:
        self._free += 1


def _event(name: str, data: dict[str, Any], event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def tail_events(
    redis: aioredis.Redis,
    query: LogFilter,
    *,
    after: str | None,
    max_seconds: float,
    disconnected: Callable[[], Awaitable[bool]],
    slots: TailSlots,
) -> AsyncIterator[str]:
    """SSE text; holds one of `slots` from its first step to its end."""
    stream = keys.request_log_stream()
    slots.acquire()
    try:
        position = after or "$"
        if position == "$":
            # Pin `$` to an id now, so entries written between two reads are never skipped.
            last: Any = await redis.xrevrange(stream, "+", "-", count=1)
            position = last[0][0] if last else "0-0"
        deadline = time.monotonic() + max_seconds
        quiet_since = time.monotonic()
        yield _event("start", {"after": position})
        while (left := deadline - time.monotonic()) > 0:
            if await disconnected():
                return
            response: Any = await redis.xread(
                {stream: position}, count=READ_COUNT, block=max(1, min(BLOCK_MS, int(left * 1000)))
            )
            for _stream, rows in response or []:
                for entry_id, fields in rows:
                    position = entry_id
                    entry = parse_entry(entry_id, fields)
                    if query.matches(entry):
                        quiet_since = time.monotonic()
                        yield _event("entry", entry.as_json(), entry_id)
            if time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
                quiet_since = time.monotonic()
                yield ": keep-alive\n\n"
            await asyncio.sleep(0)
        yield _event("end", {"resume_after": position, "reason": "max_seconds"})
    finally:
        slots.release()
