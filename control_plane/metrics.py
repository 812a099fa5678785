"""Prometheus metrics of one control-plane process, served by metrics_listener.py on its own loopback
listener (INTERNAL_HOST:CP_METRICS_PORT), like the data plane's internal listener: never on the API port,
which may be reachable from the internet through the data plane (the OAuth endpoints), so no tenant's
hostnames, certificates or logins can leak through it.

Label values come from closed sets: route templates (`/api/v1/services/{name}`, never the name itself),
HTTP methods and OAuth grant types (anything else is `other`), status codes, OAuth error codes, ACME
outcomes, workflow names. Workflow lag is read from Redis at scrape time (a few XINFO/XLEN calls), so it is
what Redis holds now, whichever replica answers the scrape.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .oauth.grant_types import AUTHORIZATION_CODE, CLIENT_CREDENTIALS, DEVICE_CODE, REFRESH_TOKEN

API_LATENCY_BUCKETS_SECONDS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
GRANT_TYPES: Final = frozenset({AUTHORIZATION_CODE, REFRESH_TOKEN, DEVICE_CODE, CLIENT_CREDENTIALS})
# Requests no route matched (404s, scanners): one series, not one per path.
UNMATCHED_ROUTE: Final = "unmatched"
# Clients may send any method token; anything else is one `other` series.
HTTP_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
ACME_ORDER_OUTCOMES: Final = ("issued", "failed")

# Per workflow: (undelivered, in flight, dead-lettered) events.
WorkflowLag = Callable[[], Awaitable[dict[str, tuple[int, int, int]]]]


class ControlPlaneMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        self.api_request_seconds = Histogram(
            "mhp_cp_http_request_duration_seconds",
            "Control-plane HTTP requests (management API, OAuth, console) by route template, method and "
            "status: time from the request to the end of its response.",
            ["route", "method", "status"],
            buckets=API_LATENCY_BUCKETS_SECONDS,
            registry=self.registry,
        )
        self.oauth_grants_total = Counter(
            "mhp_cp_oauth_grants",
            "Token requests (/token, /device/token) by grant type and outcome: `issued` or the OAuth error "
            "code answered (invalid_grant, invalid_client, authorization_pending, ...).",
            ["grant_type", "outcome"],
            registry=self.registry,
        )
        self.acme_orders_total = Counter(
            "mhp_cp_acme_orders",
            "ACME orders this replica ran, by outcome (issued, or failed and retried with backoff).",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in ACME_ORDER_OUTCOMES:
            self.acme_orders_total.labels(outcome=outcome)
        self.workflow_events = Gauge(
            "mhp_cp_workflow_events",
            "Events in a workflow stream by state: `undelivered` (the consumer group's lag), `in_flight` "
            "(delivered, not acknowledged) and `dead` (in the dead-letter stream).",
            ["workflow", "state"],
            registry=self.registry,
        )
        self.scrape_errors_total = Counter(
            "mhp_cp_metrics_scrape_errors",
            "Scrapes whose Redis-backed values (workflow lag) could not be read; the rest is still served.",
            registry=self.registry,
        )

    def count_grant(self, grant_type: str, outcome: str) -> None:
        grant = grant_type if grant_type in GRANT_TYPES else "other"
        self.oauth_grants_total.labels(grant_type=grant, outcome=outcome).inc()

    def count_acme_outcome(self, outcome: str) -> None:
        """Called with each issuance's Outcome; only those where an order ran are counted."""
        if outcome in ACME_ORDER_OUTCOMES:
            self.acme_orders_total.labels(outcome=outcome).inc()

    async def render(self, workflow_lag: WorkflowLag | None) -> tuple[bytes, str]:
        """The exposition body and its Content-Type; reads workflow lag from Redis first."""
        if workflow_lag is not None:
            try:
                lag = await workflow_lag()
            except Exception:  # Redis away: serve the process's own metrics anyway, and count it
                self.scrape_errors_total.inc()
            else:
                for workflow, (undelivered, in_flight, dead) in lag.items():
                    self.workflow_events.labels(workflow=workflow, state="undelivered").set(undelivered)
                    self.workflow_events.labels(workflow=workflow, state="in_flight").set(in_flight)
                    self.workflow_events.labels(workflow=workflow, state="dead").set(dead)
        return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4


class RequestMetrics:
    """ASGI middleware timing every HTTP request to the end of its response, labelled by route template."""

    def __init__(self, app: ASGIApp, *, metrics: ControlPlaneMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app raises before answering

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            # The router wrote the matched route into this same scope dict.
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED_ROUTE
            method = scope["method"] if scope["method"] in HTTP_METHODS else "other"
            self.metrics.api_request_seconds.labels(
                route=template, method=method, status=str(status)
            ).observe(time.perf_counter() - started)
