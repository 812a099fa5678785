"""The control-plane FastAPI app factory.

The lifespan creates ONE Redis pool (shared.redis_client.create_redis) and the Runtime around it. Creating the
pool does not connect, so the app starts while Redis is down and `/health` reports 503 until it is back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from shared.config import Settings, load_settings
from shared.redis_client import create_redis

from .acme.worker import start_certificate_worker
from .api import (
    audit_logs,
    auth_config,
    certificates,
    error_handlers,
    health,
    index,
    logs,
    oauth,
    oauth_clients,
    oauth_consents,
    oauth_keys,
    ports,
    proxies,
    routes,
    services,
    tokens,
    workflows,
)
from .edge.body_limit import BodyLimit
from .edge.rate_limit import RateLimit
from .metrics import ControlPlaneMetrics, RequestMetrics
from .metrics_listener import MetricsListener
from .oauth.metadata import issuer_path
from .request_context import RequestContextMiddleware
from .runtime import Runtime
from .web import api_docs


def create_app(settings: Settings | None = None) -> FastAPI:
    resolved = settings if settings is not None else load_settings()
    metrics = ControlPlaneMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = create_redis(resolved)
        app.state.runtime = Runtime.build(resolved, redis)
        app.state.runtime.oauth.start(app.state.runtime.proxies)
        certificate_worker = start_certificate_worker(
            app.state.runtime.store,
            resolved,
            app.state.runtime.certificates,
            on_outcome=metrics.count_acme_outcome,
        )
        app.state.runtime.service_worker.start()
        metrics_listener = MetricsListener(metrics, app.state.runtime.workflows.lag)
        if resolved.CP_METRICS_PORT:
            await metrics_listener.start(resolved.INTERNAL_HOST, resolved.CP_METRICS_PORT)
        app.state.metrics_listener = metrics_listener
        app.state.runtime.log_worker.start()
        try:
            yield
        finally:
            await app.state.runtime.log_worker.stop()
            await metrics_listener.close()
            await app.state.runtime.service_worker.stop()
            if certificate_worker is not None:
                await certificate_worker.stop()
            if app.state.runtime.engine is not None:
                await app.state.runtime.engine.close()
            await app.state.runtime.oauth.aclose()
            await redis.aclose()

    app = FastAPI(
        title="mcp-http-proxy control plane",
        version="0.1.0",
        description=(
            "Management API: API tokens, proxy targets, routes, certificates, OAuth protection, "
            "Docker-managed and external services, host ports. All state lives in Redis."
        ),
        lifespan=lifespan,
        docs_url=None,  # served from vendored assets by web/api_docs.py (no CDN)
        redoc_url=None,
    )
    error_handlers.install(app)
    api_docs.install(app)
    app.include_router(health.router)
    app.include_router(index.router)
    app.include_router(tokens.router)
    app.include_router(proxies.router)
    app.include_router(routes.router)
    app.include_router(certificates.router)
    app.include_router(auth_config.router)
    app.include_router(oauth_clients.router)
    app.include_router(oauth_keys.router)
    app.include_router(oauth_consents.router)
    app.include_router(services.router)
    app.include_router(ports.router)
    app.include_router(workflows.router)
    app.include_router(audit_logs.router)  # before logs.router: /api/v1/logs/audit/ and /oauth/ are its
    app.include_router(logs.router)
    # Middleware runs outermost-last-added: CORS (added by oauth.install) wraps the rate limit, so a browser
    # can read a 429; the rate limit runs before the body limit, which runs before any handler reads a byte.
    app.add_middleware(
        BodyLimit,
        public_max_bytes=resolved.CP_MAX_BODY_BYTES_PUBLIC,
        api_max_bytes=resolved.CP_MAX_BODY_BYTES_API,
    )
    app.add_middleware(RateLimit, issuer_path=issuer_path(resolved.oauth_issuer))
    # Outside the rate limit, so it sees (and audits) its 429s; its context (client address, caller,
    # If-Match, the new ETag) belongs to the request: see request_context.py.
    app.add_middleware(RequestContextMiddleware)
    oauth.install(app, resolved.oauth_issuer)
    # Outermost: the time and status a client sees, 429s and 413s included.
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.state.metrics = metrics
    return app
