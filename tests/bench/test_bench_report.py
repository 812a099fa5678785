"""The benchmark's pure parts, fed real-shaped data: wrk reporter parsing, ratios, the issue's goals."""

from __future__ import annotations

import pytest

from tests.bench.report import Measurement, issue_goals, ratios, render_extra_rows, render_goals, render_table
from tests.bench.wrk_result import MARKER, WrkOutputError, WrkResult, parse_wrk_output

WRK_STDOUT = (
    "Running 10s test @ http://127.0.0.1:41000/small.txt\n"
    "  1 threads and 50 connections\n"
    "  Thread Stats   Avg      Stdev     Max   +/- Stdev\n"
    "    Latency   601.12us  100.20us   9.01ms   90.00%\n"
    "  200000 requests in 10.00s, 52.00MB read\n"
    f'{MARKER}{{"duration_us":10000000,"requests":200000,"bytes":52000000,"errors_connect":0,'
    '"errors_read":1,"errors_write":0,"errors_status":2,"errors_timeout":0,"latency_mean_us":601.120,'
    '"latency_stdev_us":100.200,"latency_max_us":9010,"latency_p50_us":580,"latency_p90_us":700,'
    '"latency_p99_us":1200,"latency_p999_us":4000}\n'
)


def _wrk(requests_per_second: float, p99_ms: float, megabytes_per_second: float) -> WrkResult:
    return WrkResult(
        duration_seconds=10.0,
        requests=int(requests_per_second * 10),
        bytes=int(megabytes_per_second * 1e7),
        errors_connect=0,
        errors_read=0,
        errors_write=0,
        errors_status=0,
        errors_timeout=0,
        latency_mean_ms=p99_ms / 2,
        latency_stdev_ms=0.1,
        latency_max_ms=p99_ms * 2,
        latency_p50_ms=p99_ms / 4,
        latency_p90_ms=p99_ms / 2,
        latency_p99_ms=p99_ms,
        latency_p999_ms=p99_ms * 1.5,
    )


def test_parse_reporter_line() -> None:
    result = parse_wrk_output(WRK_STDOUT)
    assert result.requests == 200_000
    assert result.requests_per_second == pytest.approx(20_000)
    assert result.megabytes_per_second == pytest.approx(5.2)
    assert result.latency_p50_ms == pytest.approx(0.58)
    assert result.latency_p99_ms == pytest.approx(1.2)
    assert result.errors == 3


@pytest.mark.parametrize(
    "stdout",
    [
        "",
        "Running 10s test @ http://x/\nunable to connect to 127.0.0.1:1 Connection refused\n",
        f"{MARKER}{{}}\n",
    ],
)
def test_output_without_a_complete_reporter_line_is_an_error(stdout: str) -> None:
    with pytest.raises(WrkOutputError):
        parse_wrk_output(stdout)


def test_ratios_and_goals() -> None:
    small = {
        "direct": Measurement("direct", "small", _wrk(100_000, 1.0, 26), None),
        "ours": Measurement("ours", "small", _wrk(30_000, 3.0, 8), 9.9),
        "caddy": Measurement("caddy", "small", _wrk(20_000, 2.0, 5), 10.0),
    }
    big = {
        "ours": Measurement("ours", "1m", _wrk(500, 40.0, 500), 10.0),
        "nginx": Measurement("nginx", "1m", _wrk(1200, 20.0, 1200), 10.0),
    }
    table = ratios(small)
    assert table["ours/direct"]["requests_per_second"] == pytest.approx(0.3)
    assert table["ours/caddy"]["requests_per_second"] == pytest.approx(1.5)
    assert table["ours/caddy"]["latency_p99"] == pytest.approx(1.5)
    assert "ours/nginx" not in table  # nginx was not measured at this size
    protected = {"ours": Measurement("ours", "protected", _wrk(27_500, 3.2, 7), 9.9)}
    extras = {
        "ws-echo": {
            "ours": {"round_trips_per_second": 40_000.0, "latency_p50_ms": 1.0, "latency_p99_ms": 2.0},
            "nginx": {"round_trips_per_second": 60_000.0, "latency_p50_ms": 0.5, "latency_p99_ms": 1.0},
        },
        "sse-delay": {
            "ours": {
                "events_per_second": 6400.0,
                "delay_p50_ms": 0.2,
                "delay_p99_ms": 3.0,
                "delay_max_ms": 9.0,
                "lost": 0,
            }
        },
        "idle-memory": {
            "ours": {
                "connections": 10_000,
                "failed": 0,
                "rss_before_mb": 70.0,
                "rss_after_mb": 130.0,
                "mb_per_10k": 60.0,
            }
        },
    }
    goals = {
        g.workload: (g.value, g.floor_met, g.goal_met)
        for g in issue_goals({"small": small, "1m": big, "protected": protected}, extras)
    }
    assert goals == {
        "small GET keep-alive req/s": (1.5, True, True),
        "small GET p99": (1.5, True, False),
        "small GET over TLS keep-alive req/s": (None, None, None),  # not measured in this run
        "new TLS connection per request (req/s)": (None, None, None),
        "OAuth-protected small GET vs the same proxy unprotected": (pytest.approx(0.917), True, False),
        "WebSocket 32 B echo round trips/s": (pytest.approx(0.667), False, False),
        "SSE event delay p99 at 6,400 events/s": (3.0, True, False),
        "memory per 10,000 idle keep-alive connections": (60.0, True, False),
        "1 MiB GET (MB/s)": (pytest.approx(0.417), False, False),
    }
    rendered = render_goals(issue_goals({"small": small}, extras))
    assert "small GET keep-alive req/s" in rendered and "NOT met" in rendered and "not measured" in rendered
    tables = render_extra_rows(extras)
    assert "40,000" in tables and "60.0" in tables and "ws-echo" in tables and "idle-memory" in tables
    text = render_table("small", small)
    assert "ours/Caddy" in text and "0.30x" in text and "1.50x" in text


def test_table_flags_runs_with_errors_or_outside_load() -> None:
    clean = Measurement("nginx", "small", _wrk(20_000, 2.0, 5), 9.0)
    assert "WARNING" not in render_table("small", {"nginx": clean})
    broken = parse_wrk_output(WRK_STDOUT)  # 1 read error and 2 non-2xx responses
    table = render_table("small", {"nginx": clean, "caddy": Measurement("caddy", "small", broken, 9.0)})
    assert "non-2xx responses from Caddy (3)" in table
    busy = Measurement("nginx", "small", _wrk(20_000, 2.0, 5), 9.0, other_cpu_seconds=5.0)
    assert "other processes used" in render_table("small", {"nginx": busy})
