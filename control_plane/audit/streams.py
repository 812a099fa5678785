"""A bounded Redis stream of JSON audit entries, and its search: newest first, filtered, cursor-paginated.

Bounded two ways: by age (XADD ... MINID ~ now - retention) and by size (XTRIM MAXLEN ~ max entries, for a
burst). A search walks the stream backwards (XREVRANGE) in batches and stops when the page is full or after
scanning `MAX_SCANNED_PER_PAGE` entries, so a filter that matches rarely costs a bounded amount per request;
the returned cursor (the last stream id looked at) continues the walk where it stopped. A page can therefore
be short, or empty, with a cursor: the client follows `next_cursor` until it is null.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis
from pydantic import BaseModel, ValidationError

log = logging.getLogger(__name__)

E = TypeVar("E", bound=BaseModel)

FIELD = "e"
SCAN_BATCH = 500
MAX_SCANNED_PER_PAGE = 20_000
CURSOR_PATTERN = re.compile(r"^\d{1,20}-\d{1,20}$")


@dataclass(frozen=True, slots=True)
class AuditStream:
    key: str
    retention_seconds: float
    max_entries: int

    def append(self, pipe: Any, document: str, now: float | None = None) -> None:
        """Queue the XADD (and its trims) on a pipeline, e.g. inside a config MULTI/EXEC."""
        now = time.time() if now is None else now
        min_id = max(0, int((now - self.retention_seconds) * 1000))
        pipe.xadd(self.key, {FIELD: document}, minid=min_id, approximate=True)
        if self.max_entries > 0:
            pipe.xtrim(self.key, maxlen=self.max_entries, approximate=True)

    async def add(self, redis: aioredis.Redis, document: str) -> None:
        async with redis.pipeline(transaction=False) as pipe:
            self.append(pipe, document)
            await pipe.execute()


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Any]
    next_cursor: str | None


async def search(
    redis: aioredis.Redis,
    stream: AuditStream,
    model: type[E],
    keep: Callable[[E], bool],
    *,
    since: float | None,
    until: float | None,
    cursor: str | None,
    limit: int,
) -> Page:
    """Entries matching `keep`, newest first, at most `limit`, below `cursor` (exclusive) when given."""
    high = f"({cursor}" if cursor else (str(int(until * 1000)) if until is not None else "+")
    low = str(int(since * 1000)) if since is not None else "-"
    items: list[E] = []
    scanned = 0
    last_id: str | None = None
    while True:
        batch: list[tuple[str, dict[str, str]]] = await redis.xrevrange(
            stream.key, high, low, count=SCAN_BATCH
        )
        if not batch:
            return Page(items, None)
        for entry_id, fields in batch:
            last_id = entry_id
            scanned += 1
            parsed = _parse(model, entry_id, fields)
            if parsed is not None and keep(parsed):
                items.append(parsed)
                if len(items) >= limit:
                    return Page(items, entry_id)
        if len(batch) < SCAN_BATCH:
            return Page(items, None)
        if scanned >= MAX_SCANNED_PER_PAGE:
            return Page(items, last_id)
        high = f"({last_id}"


def _parse(model: type[E], entry_id: str, fields: dict[str, str]) -> E | None:
    try:
        data = json.loads(fields.get(FIELD, ""))
        return model.model_validate({**data, "id": entry_id})
    except (ValueError, ValidationError, TypeError) as exc:
        log.warning("skipping unreadable audit entry %s: %s", entry_id, exc)
        return None
