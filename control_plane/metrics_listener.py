"""The control plane's metrics listener (default 127.0.0.1:9099): GET /metrics in the Prometheus text format.

A listener of its own on INTERNAL_HOST, as the data plane has: the API port can be reachable from the internet
through the data plane (the authorization server's endpoints), this one never is, so it needs no credentials
and Prometheus scrapes it like the data plane's internal port. It speaks minimal HTTP/1.1 (shared.plain_http,
as the data plane's does) and closes after each response. A port that cannot be bound is logged and the
control plane runs without it (the API matters more than its metrics).
"""

from __future__ import annotations

import asyncio
import logging

from shared.plain_http import NOT_FOUND, Answer, serve_one_request

from .metrics import ControlPlaneMetrics, WorkflowLag

log = logging.getLogger(__name__)


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
        async def answer(path: bytes) -> Answer:
            if path == b"/metrics":
                body, content_type = await self._metrics.render(self._workflow_lag)
                return 200, body, content_type
            return NOT_FOUND

        await serve_one_request(reader, writer, answer, log)
