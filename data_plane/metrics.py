"""Prometheus metrics of one data-plane process, served on the internal listener.

Each `Metrics` owns its own CollectorRegistry (never the process-global default one), so several instances
can live in one test process and nothing registers twice. Label values come from small closed sets (status
codes as strings, reload results), so the series count stays bounded whatever clients send. Each worker
process has its own instance on its own internal port (INTERNAL_PORT + worker index); summing across
`--workers` is the scraper's job, with one target per worker (deploy/prometheus/prometheus.yml).

The two series touched on every request (requests by status, upstream latency) are plain integer arrays
folded into Prometheus families at scrape time by a collector: prometheus_client's own Counter and Histogram
take a lock and walk every bucket per call, a cost paid thousands of times a second for data read once per
scrape. Everything runs on the event-loop thread, so the arrays need no lock.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import Final, Literal, Protocol, get_args

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

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


class RequestLogState(Protocol):
    """What the metrics read from the request log (data_plane.request_log imports nothing from here)."""

    @property
    def pending(self) -> int: ...

    @property
    def backlog_bytes(self) -> int: ...


ReloadResult = Literal["success", "failure"]
ApplyMode = Literal["changes", "full"]
TlsHandshakeResult = Literal[
    "ok", "plain_http", "not_tls", "timeout", "closed", "tls_error", "overloaded", "proxy_header"
]
TLS_HANDSHAKE_RESULTS: Final[tuple[TlsHandshakeResult, ...]] = get_args(TlsHandshakeResult)
# Anything outside real HTTP status codes folds into one series instead of minting a new one.
OUT_OF_RANGE_STATUS: Final = "other"


class LatencyHistogram:
    """Bucket counts of observed seconds (`le` semantics: a value equal to a bound counts in that bucket)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds


class _HotPathCollector(Collector):
    def __init__(self, status_counts: list[int], latency: LatencyHistogram) -> None:
        self._status_counts = status_counts
        self._latency = latency

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "mhp_requests",
            "Requests answered, by HTTP status code (ours or the upstream's).",
            labels=["status"],
        )
        for status, count in enumerate(self._status_counts):
            if count:
                requests.add_metric([str(status) if status else OUT_OF_RANGE_STATUS], count)
        yield requests
        latency = self._latency
        buckets: list[tuple[str, float]] = []
        cumulative = 0
        for bound, count in zip((*latency.bounds, float("inf")), latency.counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        yield HistogramMetricFamily(
            "mhp_upstream_latency_seconds",
            "Time from sending a request upstream to its response head arriving.",
            buckets=buckets,
            sum_value=latency.sum,
        )


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # process_resident_memory_bytes, open fds, CPU seconds: what an operator checks first on a proxy.
        ProcessCollector(registry=self.registry)
        # Index = status code; index 0 counts everything outside 100..599 (OUT_OF_RANGE_STATUS).
        self._status_counts = [0] * 600
        self.upstream_latency_seconds = LatencyHistogram(LATENCY_BUCKETS_SECONDS)
        self.registry.register(_HotPathCollector(self._status_counts, self.upstream_latency_seconds))
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
            "Request-log entries dropped for any reason (backlog full, Redis refused them, shutdown).",
            registry=self.registry,
        )
        self.log_backlog_dropped_total = Counter(
            "mhp_log_backlog_dropped",
            "Request-log entries dropped, oldest first, because Redis was away past the backlog bound "
            "(DP_LOG_BACKLOG_MAX_BYTES, DP_LOG_BACKLOG_MAX_AGE_SECONDS).",
            registry=self.registry,
        )
        self.log_backlog_entries = Gauge(
            "mhp_log_backlog_entries",
            "Request-log entries waiting to be written to Redis.",
            registry=self.registry,
        )
        self.log_backlog_bytes = Gauge(
            "mhp_log_backlog_bytes",
            "Approximate memory held by request-log entries waiting to be written to Redis.",
            registry=self.registry,
        )
        for result in ("success", "failure"):
            self.reloads_total.labels(result=result)  # export both series at 0 so alerts can rate() them
        self.config_applies_total = Counter(
            "mhp_config_applies",
            "Config versions applied, by how: `changes` (only what the changes stream named was re-read) or "
            "`full` (everything re-read: first load, reconnect, or a gap in the stream).",
            ["mode"],
            registry=self.registry,
        )
        for mode in get_args(ApplyMode):
            self.config_applies_total.labels(mode=mode)
        self.acme_challenges_answered_total = Counter(
            "mhp_acme_challenges_answered",
            "ACME HTTP-01 challenge requests answered with a key authorisation by this process.",
            registry=self.registry,
        )
        self.upstream_target_refusals_total = Counter(
            "mhp_upstream_target_refusals",
            "Upstream connections not made because every address of a target owned by an ordinary token "
            "is outside what it may reach (not public, not in ALLOWED_TARGET_CIDRS, or a system port).",
            registry=self.registry,
        )
        self.tls_handshakes_total = Counter(
            "mhp_tls_handshakes",
            "TLS handshakes on the HTTPS listener, by result (ok or why it failed).",
            ["result"],
            registry=self.registry,
        )
        for result in TLS_HANDSHAKE_RESULTS:
            self.tls_handshakes_total.labels(result=result)

    def watch_request_log(self, request_log: RequestLogState) -> None:
        """Read the request log's backlog at scrape time (nothing to update per request)."""
        self.log_backlog_entries.set_function(lambda: request_log.pending)
        self.log_backlog_bytes.set_function(lambda: request_log.backlog_bytes)

    def count_request(self, status: int) -> None:
        self._status_counts[status if 100 <= status <= 599 else 0] += 1

    def count_reload(self, result: ReloadResult) -> None:
        self.reloads_total.labels(result=result).inc()

    def count_apply(self, mode: ApplyMode) -> None:
        self.config_applies_total.labels(mode=mode).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its Content-Type, for the internal listener's /metrics."""
        # generate_latest writes the classic text format; 0.0.4 is the version label every scraper accepts.
        return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4
