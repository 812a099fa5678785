"""`just up -v`: one access line per request, read from the request-log stream every data plane writes.

The lines come from Redis, not from a data plane's output, so they cover every replica and worker and cost
the data plane nothing when nobody asks. The reader starts at the stream's end (`$`), blocks on XREAD, and
keeps its position across a Redis restart (it retries every second). Formatting takes the entry's fields by
name and shows `-` for one it does not find, so an entry with more or fewer fields still prints.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

from redis.exceptions import RedisError

from shared import keys
from shared.config import Settings
from shared.redis_client import create_redis

READ_BLOCK_MS = 1000
READ_COUNT = 200
RETRY_SECONDS = 1.0


def access_line(fields: Mapping[str, str]) -> str:
    """`HH:MM:SS client "METHOD host path" status bytes_out B duration ms user request-id`."""

    def field(name: str) -> str:
        return fields.get(name) or "-"

    try:
        stamp = time.strftime("%H:%M:%S", time.localtime(float(fields["time"])))
    except (KeyError, ValueError):
        stamp = "--:--:--"
    try:
        duration = f"{1000 * float(fields['duration_seconds']):.1f} ms"
    except (KeyError, ValueError):
        duration = "- ms"
    return (
        f'{stamp} {field("client_ip")} "{field("method")} {field("host")}{fields.get("path", "")}" '
        f"{field('status')} {field('bytes_out')} B {duration} {field('user')} {field('request_id')}"
    )


async def follow_access_lines(settings: Settings, emit: Callable[[str], None]) -> None:
    """Emit a line per new request-log entry until cancelled."""
    client = create_redis(settings)
    last_id = "$"
    failing = False
    try:
        while True:
            try:
                if last_id == "$":
                    # Pin the start to a real id, so a reconnect does not skip what came in between.
                    newest = await client.xrevrange(keys.request_log_stream(), count=1)
                    last_id = newest[0][0] if newest else "0-0"
                answer = await client.xread(
                    {keys.request_log_stream(): last_id}, count=READ_COUNT, block=READ_BLOCK_MS
                )
            except (RedisError, OSError) as exc:
                if not failing:  # once per outage, not once per retry
                    emit(f"cannot read the request log ({type(exc).__name__}); retrying every second")
                failing = True
                await asyncio.sleep(RETRY_SECONDS)
                continue
            failing = False
            for _stream, entries in answer:
                for entry_id, fields in entries:
                    last_id = entry_id
                    emit(access_line(fields))
    finally:
        await client.aclose()
