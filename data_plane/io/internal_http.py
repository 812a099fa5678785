"""The internal listener (default 127.0.0.1:9100): GET /health (JSON) and GET /metrics (Prometheus text).

Not on the client path and never exposed publicly; it speaks minimal HTTP/1.1 (shared.plain_http) and closes
after each response. /health answers 200 while Redis is reachable and 503 (still with the served config
version) when it is not, since a data plane without Redis keeps serving its last table but cannot see changes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os

from data_plane.runtime import Runtime
from shared.plain_http import NOT_FOUND, Answer, serve_one_request

log = logging.getLogger(__name__)


def health_document(runtime: Runtime) -> tuple[int, bytes]:
    document = {
        "pid": os.getpid(),
        "status": "ok" if runtime.redis_connected else "degraded",
        "config_version": runtime.table.version,
        "proxies": len(runtime.table),
        "redis": "connected" if runtime.redis_connected else "unreachable",
        "open_connections": len(runtime.connections),
        "draining": runtime.draining,
        "request_log_dropped": runtime.request_log.dropped,
        "request_log_backlog_dropped": runtime.request_log.backlog_dropped,
        "request_log_backlog_entries": runtime.request_log.pending,
        "request_log_backlog_bytes": runtime.request_log.backlog_bytes,
    }
    return (200 if runtime.redis_connected else 503), json.dumps(document).encode()


async def handle_internal(
    runtime: Runtime, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    async def answer(path: bytes) -> Answer:
        if path == b"/health":
            status, body = health_document(runtime)
            return status, body, "application/json"
        if path == b"/metrics":
            body, content_type = runtime.metrics.render()
            return 200, body, content_type
        return NOT_FOUND

    await serve_one_request(reader, writer, answer, log)
