"""Reading a Prometheus text exposition back, with prometheus_client's own parser (what a scraper reads)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

SampleKey = tuple[str, tuple[tuple[str, str], ...]]


def samples(text: str) -> dict[SampleKey, float]:
    """Every sample by (name, sorted labels)."""
    out: dict[SampleKey, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def sample_value(text: str, name: str, **labels: str) -> float | None:
    """One sample's value, or None when the exposition does not have it."""
    return samples(text).get((name, tuple(sorted(labels.items()))))
