"""Data-plane metrics: what a Prometheus scrape of the internal listener would read.

The exposition is parsed back with prometheus_client's own text parser, the same format Prometheus reads.
"""

from __future__ import annotations

import pytest

from data_plane.metrics import Metrics
from tests.harness.prometheus import SampleKey, samples


def scrape(metrics: Metrics) -> dict[SampleKey, float]:
    body, _ = metrics.render()
    return samples(body.decode("utf-8"))


def test_every_metric_the_issue_names_is_exported_with_its_value() -> None:
    metrics = Metrics()
    metrics.count_request(200)
    metrics.count_request(200)
    metrics.count_request(502)
    metrics.upstream_latency_seconds.observe(0.003)
    metrics.upstream_latency_seconds.observe(0.2)
    metrics.open_connections.inc(3)
    metrics.open_connections.dec()
    metrics.config_version.set(42)
    metrics.count_reload("success")
    metrics.count_reload("failure")
    metrics.count_reload("success")
    metrics.log_dropped_total.inc(7)

    samples = scrape(metrics)
    assert samples[("mhp_requests_total", (("status", "200"),))] == 2
    assert samples[("mhp_requests_total", (("status", "502"),))] == 1
    assert samples[("mhp_upstream_latency_seconds_count", ())] == 2
    assert samples[("mhp_upstream_latency_seconds_bucket", (("le", "0.005"),))] == 1
    assert samples[("mhp_upstream_latency_seconds_bucket", (("le", "0.25"),))] == 2
    assert samples[("mhp_upstream_latency_seconds_sum", ())] == pytest.approx(0.203)
    assert samples[("mhp_open_connections", ())] == 2
    assert samples[("mhp_config_version", ())] == 42
    assert samples[("mhp_reloads_total", (("result", "success"),))] == 2
    assert samples[("mhp_reloads_total", (("result", "failure"),))] == 1
    assert samples[("mhp_log_dropped_total", ())] == 7


def test_reload_series_exist_at_zero_before_any_reload() -> None:
    samples = scrape(Metrics())
    assert samples[("mhp_reloads_total", (("result", "success"),))] == 0
    assert samples[("mhp_reloads_total", (("result", "failure"),))] == 0
    assert ("mhp_requests_total", (("status", "200"),)) not in samples


def test_status_label_cardinality_is_bounded() -> None:
    metrics = Metrics()
    for status in range(-5, 70000, 7):
        metrics.count_request(status)
    statuses = {dict(labels)["status"] for name, labels in scrape(metrics) if name == "mhp_requests_total"}
    assert "other" in statuses
    assert statuses - {"other"} <= {str(code) for code in range(100, 600)}
    assert len(statuses) <= 501


def test_instances_are_independent() -> None:
    first, second = Metrics(), Metrics()  # a shared default registry would raise "Duplicated timeseries" here
    first.count_request(404)
    samples = scrape(second)
    assert ("mhp_requests_total", (("status", "404"),)) not in samples
    assert scrape(first)[("mhp_requests_total", (("status", "404"),))] == 1


def test_render_gives_a_content_type_prometheus_accepts() -> None:
    body, content_type = Metrics().render()
    assert content_type.startswith("text/plain; version=0.0.4")
    assert body.startswith(b"# HELP ")


def test_process_metrics_describe_this_process() -> None:
    samples = scrape(Metrics())
    # Memory of a live Python process is never zero; a registry without the process collector has no sample.
    assert samples[("process_resident_memory_bytes", ())] > 0
    assert samples[("process_open_fds", ())] > 0


def test_latency_buckets_count_a_value_equal_to_a_bound_and_overflow_into_inf() -> None:
    metrics = Metrics()
    for seconds in (0.0005, 0.005, 0.0051, 1000.0):
        metrics.upstream_latency_seconds.observe(seconds)
    samples = scrape(metrics)
    bucket = "mhp_upstream_latency_seconds_bucket"
    assert samples[(bucket, (("le", "0.0005"),))] == 1
    assert samples[(bucket, (("le", "0.005"),))] == 2
    assert samples[(bucket, (("le", "0.01"),))] == 3
    assert samples[(bucket, (("le", "120.0"),))] == 3
    assert samples[(bucket, (("le", "+Inf"),))] == 4
    assert samples[("mhp_upstream_latency_seconds_count", ())] == 4
