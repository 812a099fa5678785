"""Run-independent half of driving wrk: the Lua reporter we hand it, and parsing what it prints.

wrk's `done()` hook sees the exact latency histogram, so the reporter prints one line of JSON (prefixed with a
marker) instead of us scraping the human-readable table. Latencies are in microseconds as wrk measures them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

MARKER = "MHP_BENCH_JSON "

REPORTER_LUA = r"""
-- Printed once when the run ends: totals, error counts and latency percentiles (microseconds).
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"duration_us":%d,"requests":%d,"bytes":%d,' ..
    '"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_status":%d,"errors_timeout":%d,' ..
    '"latency_mean_us":%.3f,"latency_stdev_us":%.3f,"latency_max_us":%d,' ..
    '"latency_p50_us":%d,"latency_p90_us":%d,"latency_p99_us":%d,"latency_p999_us":%d}\n',
    "MARKER", summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
""".replace('"MARKER"', json.dumps(MARKER))


class WrkOutputError(ValueError):
    """wrk's output did not contain the reporter's line (it crashed, or was not given the script)."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    duration_seconds: float
    requests: int
    bytes: int
    errors_connect: int
    errors_read: int
    errors_write: int
    errors_status: int
    errors_timeout: int
    latency_mean_ms: float
    latency_stdev_ms: float
    latency_max_ms: float
    latency_p50_ms: float
    latency_p90_ms: float
    latency_p99_ms: float
    latency_p999_ms: float

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.duration_seconds if self.duration_seconds > 0 else 0.0

    @property
    def megabytes_per_second(self) -> float:
        """Bytes read by wrk (headers included) per second, in MB (10^6 bytes)."""
        return self.bytes / self.duration_seconds / 1e6 if self.duration_seconds > 0 else 0.0

    @property
    def errors(self) -> int:
        return (
            self.errors_connect
            + self.errors_read
            + self.errors_write
            + self.errors_status
            + self.errors_timeout
        )

    def to_json(self) -> dict[str, float | int]:
        out: dict[str, float | int] = asdict(self)
        out["requests_per_second"] = round(self.requests_per_second, 1)
        out["megabytes_per_second"] = round(self.megabytes_per_second, 2)
        out["errors"] = self.errors
        return out


def parse_wrk_output(stdout: str) -> WrkResult:
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARKER):
            raw = json.loads(line[len(MARKER) :])
            break
    else:
        raise WrkOutputError(f"no {MARKER.strip()} line in wrk output:\n{stdout[-2000:]}")
    try:
        return WrkResult(
            duration_seconds=raw["duration_us"] / 1e6,
            requests=int(raw["requests"]),
            bytes=int(raw["bytes"]),
            errors_connect=int(raw["errors_connect"]),
            errors_read=int(raw["errors_read"]),
            errors_write=int(raw["errors_write"]),
            errors_status=int(raw["errors_status"]),
            errors_timeout=int(raw["errors_timeout"]),
            latency_mean_ms=raw["latency_mean_us"] / 1000,
            latency_stdev_ms=raw["latency_stdev_us"] / 1000,
            latency_max_ms=raw["latency_max_us"] / 1000,
            latency_p50_ms=raw["latency_p50_us"] / 1000,
            latency_p90_ms=raw["latency_p90_us"] / 1000,
            latency_p99_ms=raw["latency_p99_us"] / 1000,
            latency_p999_ms=raw["latency_p999_us"] / 1000,
        )
    except (KeyError, TypeError) as exc:
        raise WrkOutputError(f"reporter line is missing a field: {exc!r}") from exc


def wrk_argv(
    *,
    url: str,
    host: str,
    script_path: str,
    threads: int,
    connections: int,
    duration_seconds: int,
    close_each: bool = False,
    headers: tuple[str, ...] = (),
) -> list[str]:
    # With "Connection: close" the server ends every connection after one response and wrk reconnects.
    extra = ["-H", "Connection: close"] if close_each else []
    for header in headers:
        extra += ["-H", header]
    return [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_seconds}s",
        "--timeout",
        "5s",
        "-H",
        f"Host: {host}",
        *extra,
        "-s",
        script_path,
        url,
    ]
