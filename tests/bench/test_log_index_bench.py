"""The request-log index bench runs end to end on a tiny scale (its numbers are not judged; it asserts itself
that the indexer counted every entry exactly once, and every search and stats shape must run), and its result
makes the rows `just bench` prints."""

from __future__ import annotations

import argparse

import pytest

from tests.bench.log_index import bench
from tests.bench.report import render_log_rows
from tests.bench.run import LOG_ENTRIES, QUICK_LOG_ENTRIES, parse_args


async def test_a_tiny_log_index_run_completes(capsys: pytest.CaptureFixture[str]) -> None:
    result = await bench(argparse.Namespace(entries=3000, hosts=5, samples=3, batch=500))
    out = capsys.readouterr().out
    for line in (
        "indexer:",
        "memory per 1M entries",
        "tenant + path prefix",
        "every host, a day by hour",
        "tenant (all 5), a day by hour",
    ):
        assert line in out, out
    assert len(result.search_ms) == 10 and len(result.stats_ms) == 5
    table = render_log_rows(result.to_json())
    for row in (
        "3,000 entries over 5 proxies",
        "indexer",
        "search p95, slowest of 10 shapes",
        "stats for a day p95, one proxy",
        "stats for a day p95, all 5 proxies",
        "Redis memory per 1M entries",
        ">= 10,000 entries/s",
        "p95 < 100 ms",
    ):
        assert row in table, table
    _header, *rows = table.splitlines()
    assert len(rows) == 5 and all("no peer" in row for row in rows), table


def test_just_bench_runs_the_log_rows_unless_told_not_to() -> None:
    assert parse_args([]).log_rows and parse_args([]).log_entries == LOG_ENTRIES
    assert parse_args(["--quick"]).log_entries == QUICK_LOG_ENTRIES
    assert parse_args(["--log-entries", "5000"]).log_entries == 5000
    assert parse_args(["--quick", "--log-entries", str(LOG_ENTRIES)]).log_entries == LOG_ENTRIES
    assert not parse_args(["--no-log-rows"]).log_rows
    with pytest.raises(SystemExit):
        parse_args(["--log-entries", "10"])
