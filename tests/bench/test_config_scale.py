"""The config-at-scale bench runs end to end on a tiny scale (its numbers are not judged, only that every
phase ran: the seeded config reached the data plane, every change went live, every create was accepted)."""

from __future__ import annotations

import argparse

from tests.bench.config_scale import render, run


def test_a_tiny_config_scale_run_completes() -> None:
    args = argparse.Namespace(proxies=30, routes_per_proxy=2, changes=3, creates=16, output=None)
    result = run(args)
    assert result["routes"] == 60
    assert result["change_live_ms"]["count"] == 3
    assert result["creates"] == 16
    assert result["data_plane_rss_mib"]["seeded"] > 0
    assert "change live p50" in render(result)
