"""One request, one answer, close: the minimal HTTP/1.1 server of the two internal listeners (the data
plane's /health and /metrics, the control plane's /metrics). Never on a client path; h11 reads the request,
bounded in size and time, and writes the answer with its standard reason phrase. Only GET and HEAD are
answered (405 otherwise); `answer(path)` gives (status, body, content type) for a path without its query.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus

import h11

MAX_REQUEST_BYTES = 8192
READ_TIMEOUT_SECONDS = 5.0

Answer = tuple[int, bytes, str]  # status, body, content type
NOT_FOUND: Answer = (404, b"not found\n", "text/plain")
_METHOD_NOT_ALLOWED: Answer = (405, b"method not allowed\n", "text/plain")


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


async def serve_one_request(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    answer: Callable[[bytes], Awaitable[Answer]],
    log: logging.Logger,
) -> None:
    """Read one request from `reader`, write `answer`'s response, close. A malformed, oversized or slow
    request, or a client that leaves, is closed without an answer; anything else that fails is logged."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
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
        if request.method not in (b"GET", b"HEAD"):
            status, body, content_type = _METHOD_NOT_ALLOWED
        else:
            status, body, content_type = await answer(request.target.split(b"?", 1)[0])
        headers = [
            ("content-type", content_type),
            ("content-length", str(len(body))),
            ("connection", "close"),
        ]
        out = conn.send(h11.Response(status_code=status, headers=headers, reason=_reason(status))) or b""
        if request.method != b"HEAD":
            out += conn.send(h11.Data(data=body)) or b""
        out += conn.send(h11.EndOfMessage()) or b""
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
