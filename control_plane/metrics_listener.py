"""The control plane's metrics listener (default 127.0.0.1:9099): GET /metrics in the Prometheus text format.

A listener of its own on INTERNAL_HOST, as the data plane has: the API port can be reachable from the
internet through the data plane (the authorization server's endpoints), this one never is, so it needs no
credentials and Prometheus scrapes it like the data plane's internal port. It speaks minimal HTTP/1.1
through h11 and closes after each response. A port that cannot be bound is logged and the control plane
runs without it (the API matters more than its metrics).
"""

from __future__ import annotations

import asyncio
import logging

import h11

from .metrics import ControlPlaneMetrics, WorkflowLag

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 8192
READ_TIMEOUT_SECONDS = 5.0


class MetricsListener:
    def __init__(self, metrics: ControlPlaneMetrics, workflow_lag: WorkflowLag | None) -> None:
        self._metrics = metrics
        self._workflow_lag = workflow_lag
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int | None:
        if self._server is None or not self._server.sockets:
            return None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str, port: int) -> None:
        try:
            self._server = await asyncio.start_server(self._handle, host, port)
        except OSError as exc:
            log.warning("metrics listener not started on %s:%d: %s", host, port, exc)
            return
        log.info("metrics on http://%s:%d/metrics", host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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
            path = request.target.split(b"?", 1)[0]
            if request.method not in (b"GET", b"HEAD"):
                status, body, content_type = 405, b"method not allowed\n", "text/plain"
            elif path == b"/metrics":
                body, content_type = await self._metrics.render(self._workflow_lag)
                status = 200
            else:
                status, body, content_type = 404, b"not found\n", "text/plain"
            headers = [
                ("content-type", content_type),
                ("content-length", str(len(body))),
                ("connection", "close"),
            ]
            out = conn.send(h11.Response(status_code=status, headers=headers)) or b""
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
            log.exception("metrics listener request failed")
        finally:
            writer.close()
