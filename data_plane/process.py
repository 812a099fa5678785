"""One data-plane worker process: build the Runtime, open listeners, run until SIGTERM/SIGINT, then drain.

Listeners: plain HTTP on BIND_HOST:HTTP_PORT, HTTPS on BIND_HOST:HTTPS_PORT (when HTTPS_PORT is non-zero and
KEY_ENCRYPTION_KEY_B64 is set: certificates are stored encrypted), PROXY-protocol HTTP on
BIND_HOST:PROXY_PROTOCOL_PORT, PROXY protocol then TLS on BIND_HOST:PROXY_PROTOCOL_TLS_PORT (when non-zero and
HTTPS is on), and the internal /health + /metrics listener on INTERNAL_HOST:INTERNAL_PORT. The TLS listeners
run our own accept loop (io/tls_listener.py) so failed handshakes are counted and logged.
With `reuse_port` every worker binds the same ports (SO_REUSEPORT) and the kernel spreads connections across
them.

Shutdown: stop accepting, close idle keep-alive connections, let in-flight requests finish for up to
limits.shutdown_drain_seconds, then abort what remains, flush the request log and close Redis.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import ssl

from data_plane.io.client_connection import ClientConnection
from data_plane.io.internal_http import handle_internal
from data_plane.io.tls_listener import TlsListener, bound_sockets
from data_plane.io.upstream_pool import UpstreamPool
from data_plane.limits import Limits
from data_plane.metrics import Metrics
from data_plane.request_log import RequestLog
from data_plane.runtime import Runtime
from data_plane.sync.config_sync import ConfigSync
from data_plane.tls.cert_store import CertificateStore
from data_plane.tls.fallback import fallback_common_name
from shared.config import Settings
from shared.encryption import KeyNotConfigured, Keyring
from shared.redis_client import create_redis
from shared.target_policy import TargetPolicy

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 2048
TASK_STOP_SECONDS = 3.0
GC_GEN0_THRESHOLD = 20_000


async def serve(
    settings: Settings, limits: Limits, *, reuse_port: bool = False, worker_index: int = 0
) -> None:
    loop = asyncio.get_running_loop()
    redis = create_redis(settings)
    metrics = Metrics()
    runtime = Runtime(
        settings=settings,
        limits=limits,
        redis=redis,
        metrics=metrics,
        request_log=RequestLog(
            redis,
            stream_maxlen=settings.LOG_RETENTION_MAX_ENTRIES,
            max_backlog_bytes=settings.DP_LOG_BACKLOG_MAX_BYTES,
            max_backlog_age_seconds=settings.DP_LOG_BACKLOG_MAX_AGE_SECONDS,
            on_drop=metrics.log_dropped_total.inc,
            on_backlog_drop=metrics.log_backlog_dropped_total.inc,
        ),
        pool=UpstreamPool(
            loop,
            max_idle_per_origin=limits.upstream_max_idle_per_origin,
            idle_seconds=limits.upstream_idle_seconds,
            max_response_head_bytes=limits.max_response_head_bytes,
            target_policy=TargetPolicy.from_settings(settings),
            on_target_refused=metrics.upstream_target_refusals_total.inc,
        ),
        loop=loop,
    )
    metrics.watch_request_log(runtime.request_log)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    server_context = await _start_certificates(runtime)
    # The first load happens before listening so a healthy Redis means no request sees an empty table.
    sync = ConfigSync(runtime)
    try:
        await sync.loader.reload()
        runtime.redis_connected = True
    except Exception as exc:
        log.warning("initial route table load failed (%s); starting empty and retrying", exc)

    servers: list[asyncio.Server | TlsListener] = []
    servers.append(
        await loop.create_server(
            lambda: ClientConnection(runtime),
            settings.BIND_HOST,
            settings.HTTP_PORT,
            reuse_port=reuse_port,
            backlog=LISTEN_BACKLOG,
        )
    )
    if server_context is not None:
        for port, proxy_header in ((settings.HTTPS_PORT, False), (settings.PROXY_PROTOCOL_TLS_PORT, True)):
            if port:
                sockets = bound_sockets(
                    settings.BIND_HOST, port, reuse_port=reuse_port, backlog=LISTEN_BACKLOG
                )
                servers.append(TlsListener(runtime, server_context, sockets, proxy_header=proxy_header))
    if settings.PROXY_PROTOCOL_PORT:
        servers.append(
            await loop.create_server(
                lambda: ClientConnection(runtime, expect_proxy_header=True),
                settings.BIND_HOST,
                settings.PROXY_PROTOCOL_PORT,
                reuse_port=reuse_port,
                backlog=LISTEN_BACKLOG,
            )
        )
    # Not shared between workers: each one's metrics are its own (see __main__).
    internal_port = settings.INTERNAL_PORT + worker_index if settings.INTERNAL_PORT else 0
    internal = await asyncio.start_server(
        lambda r, w: handle_internal(runtime, r, w), settings.INTERNAL_HOST, internal_port
    )
    servers.append(internal)
    # Startup objects (modules, pydantic schemas) never die: keep them out of every future GC pass, and
    # collect young objects less often, since per-request garbage is freed by refcounting anyway.
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)
    tasks = [
        loop.create_task(sync.run(), name="config-sync"),
        loop.create_task(runtime.request_log.run(), name="request-log"),
    ]
    log.info(
        "data plane listening: http %s:%d, https %s, proxy-protocol %s:%d (tls %s), internal %s:%d "
        "(config version %d)",
        settings.BIND_HOST,
        settings.HTTP_PORT,
        settings.HTTPS_PORT if server_context is not None else "off",
        settings.BIND_HOST,
        settings.PROXY_PROTOCOL_PORT,
        settings.PROXY_PROTOCOL_TLS_PORT if server_context is not None else "off",
        settings.INTERNAL_HOST,
        internal_port,
        runtime.table.version,
    )
    await stop.wait()
    log.info("shutting down: draining %d connections", len(runtime.connections))
    await _drain(runtime, servers, internal)
    tasks[0].cancel()
    await runtime.request_log.close()
    await _stop_tasks(tasks)
    runtime.pool.close()
    await redis.aclose()
    log.info("stopped")


async def _start_certificates(runtime: Runtime) -> ssl.SSLContext | None:
    """Load the certificate table and return the HTTPS listener's context, or None when HTTPS is off.

    Without a KEK no stored private key can be read, so HTTPS is off (logged) rather than a start failure:
    plain HTTP and ACME challenges still work. A Redis failure here is also logged and leaves HTTPS off until
    a restart: a listener must not come up without even its fallback certificate."""
    settings = runtime.settings
    if not settings.HTTPS_PORT:
        return None
    try:
        keyring = Keyring.from_settings(settings)
    except KeyNotConfigured:
        log.warning("HTTPS disabled: KEY_ENCRYPTION_KEY_B64 is not set")
        return None
    store = CertificateStore(runtime.redis, keyring, fallback_common_name(settings))
    try:
        await store.start()
    except Exception:
        log.exception("HTTPS disabled: certificates could not be loaded")
        return None
    runtime.certificates = store
    return store.server_context()


async def _stop_tasks(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the background tasks and wait a bounded time: a cancel can be lost inside a Redis client call
    that is connecting at that moment, and shutdown must never hang on it."""
    for task in tasks:
        task.cancel()
    _done, pending = await asyncio.wait(tasks, timeout=TASK_STOP_SECONDS)
    for task in pending:
        log.warning(
            "background task %s did not stop within %.0fs; exiting anyway", task.get_name(), TASK_STOP_SECONDS
        )
    for task in _done:
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())


async def _drain(
    runtime: Runtime, servers: list[asyncio.Server | TlsListener], internal: asyncio.Server
) -> None:
    runtime.draining = True
    for server in servers:
        if server is not internal:
            server.close()
    for connection in list(runtime.connections):
        connection.close_if_idle()
    waiters = [asyncio.ensure_future(c.wait_closed()) for c in list(runtime.connections)]
    if waiters:
        _done, pending = await asyncio.wait(waiters, timeout=runtime.limits.shutdown_drain_seconds)
        for waiter in pending:
            waiter.cancel()
    for connection in list(runtime.connections):
        connection.abort()
    internal.close()
