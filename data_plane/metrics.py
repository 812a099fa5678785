"""Prometheus metrics of one data-plane process, served on the internal listener.

Each `Metrics` owns its own CollectorRegistry (never the process-global default one), so several instances
can live in one test process and nothing registers twice. Label values come from small closed sets (status
codes as strings, reload results), so the series count stays bounded whatever clients send. Each worker
process has its own instance; aggregating across `--workers` is the scraper's job (one target per worker) or
a later change.
"""

from __future__ import annotations

from typing import Final, Literal

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

# Upstream latency runs from sub-millisecond (loopback keep-alive) to the longest read timeout we allow.
LATENCY_BUCKETS_SECONDS: Final = (
    0.0005,
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
    30.0,
    60.0,
    120.0,
)

ReloadResult = Literal["success", "failure"]
# Anything outside real HTTP status codes folds into one series instead of minting a new one.
OUT_OF_RANGE_STATUS: Final = "other"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # process_resident_memory_bytes, open fds, CPU seconds: what an operator checks first on a proxy.
        ProcessCollector(registry=self.registry)
        self.requests_total = Counter(
            "mhp_requests",
            "Requests answered, by HTTP status code (ours or the upstream's).",
            ["status"],
            registry=self.registry,
        )
        self.upstream_latency_seconds = Histogram(
            "mhp_upstream_latency_seconds",
            "Time from sending a request upstream to its response head arriving.",
            buckets=LATENCY_BUCKETS_SECONDS,
            registry=self.registry,
        )
        self.open_connections = Gauge(
            "mhp_open_connections", "Client connections currently open.", registry=self.registry
        )
        self.config_version = Gauge(
            "mhp_config_version", "Config version of the route table being served.", registry=self.registry
        )
        self.reloads_total = Counter(
            "mhp_reloads", "Route-table reloads, by result.", ["result"], registry=self.registry
        )
        self.log_dropped_total = Counter(
            "mhp_log_dropped",
            "Request-log entries dropped (queue full, or Redis refused them).",
            registry=self.registry,
        )
        # labels() takes a lock and builds a key per call; the hot path reuses one child per status.
        self._status_children: dict[int, Counter] = {}
        for result in ("success", "failure"):
            self.reloads_total.labels(result=result)  # export both series at 0 so alerts can rate() them

    def count_request(self, status: int) -> None:
        key = status if 100 <= status <= 599 else -1
        child = self._status_children.get(key)
        if child is None:
            child = self.requests_total.labels(status=str(status) if key >= 0 else OUT_OF_RANGE_STATUS)
            self._status_children[key] = child
        child.inc()

    def count_reload(self, result: ReloadResult) -> None:
        self.reloads_total.labels(result=result).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its Content-Type, for the internal listener's /metrics."""
        # generate_latest writes the classic text format; 0.0.4 is the version label every scraper accepts.
        return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4
