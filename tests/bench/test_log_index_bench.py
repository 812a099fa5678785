"""The request-log index bench runs end to end on a tiny scale (its numbers are not judged; it asserts itself
that the indexer counted every entry exactly once, and every search and stats shape must run)."""

from __future__ import annotations

import argparse

import pytest

from tests.bench.log_index import bench


async def test_a_tiny_log_index_run_completes(capsys: pytest.CaptureFixture[str]) -> None:
    await bench(argparse.Namespace(entries=3000, hosts=5, samples=3, batch=500))
    out = capsys.readouterr().out
    for line in ("indexer:", "memory per 1M entries", "tenant + path prefix", "every host, a day by hour"):
        assert line in out, out
