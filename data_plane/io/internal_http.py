"""The internal listener (default 127.0.0.1:9100): GET /health (JSON) and GET /metrics (Prometheus text).

Not on the client path and never exposed publicly; it speaks minimal HTTP/1.1 through h11 and closes after
each response. /health answers 200 while Redis is reachable and 503 (still with the served config version)
when it is not, since a data plane without Redis keeps serving its last table but cannot see changes."""

from __future__ import annotations

import asyncio
import json
import logging
import os

import h11

from data_plane.protocol.answers import standard_reason
from data_plane.runtime import Runtime

log = logging.getLogger(__name__)

MAX_INTERNAL_REQUEST_BYTES = 8192
READ_TIMEOUT_SECONDS = 5.0


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
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_INTERNAL_REQUEST_BYTES)
    try:
        request: h11.Request | None = None
        async with asyncio.timeout(READ_TIMEOUT_SECONDS):
            while request is None:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(4096)
                    conn.receive_data(data)
                    if not data:
                        return
                elif type(event) is h11.Request:
                    request = event
                else:
                    return
        path = request.target.split(b"?", 1)[0]
        if request.method not in (b"GET", b"HEAD"):
            status, body, content_type = 405, b"method not allowed\n", "text/plain"
        elif path == b"/health":
            status, body = health_document(runtime)
            content_type = "application/json"
        elif path == b"/metrics":
            body, content_type = runtime.metrics.render()
            status = 200
        else:
            status, body, content_type = 404, b"not found\n", "text/plain"
        headers = [
            ("content-type", content_type),
            ("content-length", str(len(body))),
            ("connection", "close"),
        ]
        out = conn.send(h11.Response(status_code=status, headers=headers, reason=standard_reason(status)))
        if request.method != b"HEAD":
            out = (out or b"") + (conn.send(h11.Data(data=body)) or b"")
        out = (out or b"") + (conn.send(h11.EndOfMessage()) or b"")
        writer.write(out)
        await writer.drain()
    except (TimeoutError, h11.ProtocolError, ConnectionError):
        pass
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("internal listener request failed")
    finally:
        writer.close()
