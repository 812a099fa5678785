"""Turn measured runs into ratios, the issue's goals, text tables and the JSON document (no IO here).

A measurement is one target at one size: wrk's result plus the CPU seconds the proxy's process group
used. Ratios are always between runs of the same invocation, so machine speed cancels out; "x" means ours
divided by peer (for latency, below 1 is better; for requests/s and MB/s, above 1 is better).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.bench.log_index import STATS_EVERY_HOST, STATS_ONE_HOST
from tests.bench.wrk_result import WrkResult

TARGET_ORDER = ("direct", "ours", "caddy", "nginx", "haproxy")
PEERS = ("caddy", "nginx", "haproxy")
NOISY_OTHER_CPU_PERCENT = 10.0
LABELS = {"direct": "DIRECT", "ours": "ours", "caddy": "Caddy", "nginx": "nginx", "haproxy": "HAProxy"}


@dataclass(frozen=True, slots=True)
class Upstream:
    """What the backend saw during the measured run: new connections (a proxy with working upstream
    keep-alive opens about none after its warm-up; DIRECT shows wrk's own) and requests served."""

    connections_opened: int
    requests: int


@dataclass(frozen=True, slots=True)
class Measurement:
    target: str
    size: str
    wrk: WrkResult
    cpu_seconds: float | None  # the proxy's process group; None for DIRECT
    # CPU that processes this run did not start used meanwhile (other work on a shared machine)
    other_cpu_seconds: float = 0.0
    upstream: Upstream | None = None

    @property
    def cpu_percent(self) -> float | None:
        if self.cpu_seconds is None or self.wrk.duration_seconds <= 0:
            return None
        return 100.0 * self.cpu_seconds / self.wrk.duration_seconds

    @property
    def cpu_microseconds_per_request(self) -> float | None:
        """The proxy's CPU per request: steadier than requests/s on a shared machine (outside load delays a
        run but costs the proxy no CPU of its own)."""
        if self.cpu_seconds is None or self.wrk.requests <= 0:
            return None
        return 1e6 * self.cpu_seconds / self.wrk.requests

    @property
    def other_cpu_percent(self) -> float:
        """Percent of one core; above NOISY_OTHER_CPU_PERCENT the figures are disturbed."""
        if self.wrk.duration_seconds <= 0:
            return 0.0
        return 100.0 * self.other_cpu_seconds / self.wrk.duration_seconds

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = self.wrk.to_json()
        out["cpu_seconds"] = None if self.cpu_seconds is None else round(self.cpu_seconds, 3)
        out["cpu_percent"] = None if self.cpu_percent is None else round(self.cpu_percent, 1)
        per_request = self.cpu_microseconds_per_request
        out["cpu_us_per_request"] = None if per_request is None else round(per_request, 1)
        out["other_cpu_percent"] = round(self.other_cpu_percent, 1)
        out["backend_connections_opened"] = (
            None if self.upstream is None else self.upstream.connections_opened
        )
        out["backend_requests"] = None if self.upstream is None else self.upstream.requests
        return out


def best_run(runs: list[Measurement]) -> Measurement:
    """The run with the highest requests/s. Outside load can only slow a run down, so with interleaved rounds
    the fastest run of each target is its least disturbed one; every target gets the same rule."""
    return max(runs, key=lambda m: m.wrk.requests_per_second)


def _ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 3) if denominator > 0 else None


def ratios(by_target: dict[str, Measurement]) -> dict[str, dict[str, float | None]]:
    """`a/b` -> ratio of requests/s, MB/s, p50 and p99 for each comparison the issue asks for."""
    pairs = [(name, "direct") for name in TARGET_ORDER if name != "direct"]
    pairs += [("ours", peer) for peer in PEERS]
    out: dict[str, dict[str, float | None]] = {}
    for left, right in pairs:
        a, b = by_target.get(left), by_target.get(right)
        if a is None or b is None:
            continue
        out[f"{left}/{right}"] = {
            "requests_per_second": _ratio(a.wrk.requests_per_second, b.wrk.requests_per_second),
            "megabytes_per_second": _ratio(a.wrk.megabytes_per_second, b.wrk.megabytes_per_second),
            "latency_p50": _ratio(a.wrk.latency_p50_ms, b.wrk.latency_p50_ms),
            "latency_p99": _ratio(a.wrk.latency_p99_ms, b.wrk.latency_p99_ms),
        }
    return out


@dataclass(frozen=True, slots=True)
class SpeedTarget:
    """One row of issue 10's speed-target table: a ratio or a value, a floor that must hold, and a goal."""

    workload: str
    floor: str
    goal: str
    value: float | None
    unit: str  # "x" for ratios, " ms", " MB"
    floor_met: bool | None
    goal_met: bool | None

    def to_json(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "floor": self.floor,
            "goal": self.goal,
            "value": self.value,
            "unit": self.unit,
            "floor_met": self.floor_met,
            "goal_met": self.goal_met,
        }


def _metric(results: dict[str, dict[str, Measurement]], size: str, target: str, metric: str) -> float | None:
    measured = results.get(size, {}).get(target)
    return None if measured is None else float(getattr(measured.wrk, metric))


def _versus(
    results: dict[str, dict[str, Measurement]],
    size: str,
    metric: str,
    peer: str,
    peer_size: str | None = None,
) -> float | None:
    ours = _metric(results, size, "ours", metric)
    other = _metric(results, peer_size or size, peer, metric)
    return None if ours is None or other is None else _ratio(ours, other)


def _judge(value: float | None, bound: float, higher_is_better: bool) -> bool | None:
    if value is None:
        return None
    return value >= bound if higher_is_better else value <= bound


def issue_goals(
    results: dict[str, dict[str, Measurement]], extras: dict[str, dict[str, dict[str, Any]]] | None = None
) -> list[SpeedTarget]:
    """Issue 10's speed targets, evaluated on this run (informational: a benchmark never fails)."""
    extras = extras or {}
    rows: list[SpeedTarget] = []

    def ratio_row(
        workload: str, floor: tuple[str, float], goal: tuple[str, float], value: float | None, higher: bool
    ) -> None:
        rows.append(
            SpeedTarget(
                workload,
                floor[0],
                goal[0],
                value,
                "x",
                _judge(value, floor[1], higher),
                _judge(value, goal[1], higher),
            )
        )

    rps, p99, mbps = "requests_per_second", "latency_p99_ms", "megabytes_per_second"
    ratio_row(
        "small GET keep-alive req/s",
        (">= 0.5x Caddy", 0.5),
        (">= Caddy", 1.0),
        _versus(results, "small", rps, "caddy"),
        True,
    )
    ratio_row(
        "small GET p99",
        ("<= 1.5x Caddy", 1.5),
        ("<= Caddy", 1.0),
        _versus(results, "small", p99, "caddy"),
        False,
    )
    ratio_row(
        "small GET over TLS keep-alive req/s",
        (">= 0.5x Caddy", 0.5),
        (">= Caddy", 1.0),
        _versus(results, "tls-small", rps, "caddy"),
        True,
    )
    handshake_caddy = _versus(results, "tls-handshake", rps, "caddy")
    handshake_nginx = _versus(results, "tls-handshake", rps, "nginx")
    rows.append(
        SpeedTarget(
            "new TLS connection per request (req/s)",
            ">= 0.5x Caddy",
            ">= 0.8x nginx",
            handshake_caddy,
            "x",
            _judge(handshake_caddy, 0.5, True),
            _judge(handshake_nginx, 0.8, True),
        )
    )
    protected = _metric(results, "protected", "ours", rps)
    unprotected = _metric(results, "small", "ours", rps)
    ratio_row(
        "OAuth-protected small GET vs the same proxy unprotected",
        (">= 0.9x", 0.9),
        (">= 0.95x", 0.95),
        None if protected is None or unprotected is None else _ratio(protected, unprotected),
        True,
    )
    echo = extras.get("ws-echo", {})
    ours_echo, nginx_echo = echo.get("ours"), echo.get("nginx")
    ratio_row(
        "WebSocket 32 B echo round trips/s",
        (">= 0.8x nginx", 0.8),
        (">= nginx", 1.0),
        None
        if ours_echo is None or nginx_echo is None
        else _ratio(ours_echo["round_trips_per_second"], nginx_echo["round_trips_per_second"]),
        True,
    )
    sse = extras.get("sse-delay", {}).get("ours")
    sse_p99 = None if sse is None else round(float(sse["delay_p99_ms"]), 2)
    rows.append(
        SpeedTarget(
            "SSE event delay p99 at 6,400 events/s",
            "<= 5 ms, none lost",
            "<= 2 ms",
            sse_p99,
            " ms",
            None if sse is None else bool(sse_p99 is not None and sse_p99 <= 5 and sse["lost"] == 0),
            None if sse is None else bool(sse_p99 is not None and sse_p99 <= 2 and sse["lost"] == 0),
        )
    )
    idle = extras.get("idle-memory", {}).get("ours")
    per_10k = None if idle is None else idle.get("mb_per_10k")
    rows.append(
        SpeedTarget(
            "memory per 10,000 idle keep-alive connections",
            "<= 80 MB",
            "<= 50 MB",
            per_10k,
            " MB",
            _judge(per_10k, 80, False),
            _judge(per_10k, 50, False),
        )
    )
    ratio_row(
        "1 MiB GET (MB/s)",
        (">= 0.9x nginx", 0.9),
        (">= nginx", 1.0),
        _versus(results, "1m", mbps, "nginx"),
        True,
    )
    return rows


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def render_table(title: str, by_target: dict[str, Measurement]) -> str:
    header = (
        f"{'target':<9}{'req/s':>12}{'MB/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'cpu %':>7}"
        f"{'us/req':>8}{'other %':>9}{'up conns':>10}{'vs DIRECT':>11}"
    )
    lines = [f"== {title} ==", header, "-" * len(header)]
    direct = by_target.get("direct")
    for name in TARGET_ORDER:
        m = by_target.get(name)
        if m is None:
            continue
        versus = None
        if direct is not None and name != "direct":
            versus = _ratio(m.wrk.requests_per_second, direct.wrk.requests_per_second)
        lines.append(
            f"{LABELS[name]:<9}{m.wrk.requests_per_second:>12,.0f}{m.wrk.megabytes_per_second:>10,.1f}"
            f"{m.wrk.latency_p50_ms:>9.2f}{m.wrk.latency_p99_ms:>9.2f}{m.wrk.errors:>8}"
            f"{_fmt(m.cpu_percent, 0):>7}{_fmt(m.cpu_microseconds_per_request, 0):>8}"
            f"{m.other_cpu_percent:>9.0f}"
            f"{'-' if m.upstream is None else m.upstream.connections_opened:>10}"
            f"{(_fmt(versus) + 'x') if versus is not None else '-':>11}"
        )
    failing = [f"{LABELS[m.target]} ({m.wrk.errors})" for m in by_target.values() if m.wrk.errors]
    if failing:
        lines.append(
            f"  WARNING: socket errors, timeouts or non-2xx responses from {', '.join(failing)}: "
            "those figures are not comparable"
        )
    noisy = [LABELS[m.target] for m in by_target.values() if m.other_cpu_percent > NOISY_OTHER_CPU_PERCENT]
    if noisy:
        lines.append(
            f"  WARNING: other processes used > {NOISY_OTHER_CPU_PERCENT:.0f}% of a core during "
            f"{', '.join(noisy)}: those figures are disturbed"
        )
    ours = by_target.get("ours")
    if ours is not None:
        table = ratios(by_target)
        for peer in PEERS:
            r = table.get(f"ours/{peer}")
            if r is None:
                continue
            lines.append(
                f"  ours/{LABELS[peer]:<8} req/s {_fmt(r['requests_per_second'])}x   "
                f"MB/s {_fmt(r['megabytes_per_second'])}x   p50 {_fmt(r['latency_p50'])}x   "
                f"p99 {_fmt(r['latency_p99'])}x"
            )
    return "\n".join(lines)


def render_goals(goals: list[SpeedTarget]) -> str:
    verdicts = {True: "met", False: "NOT met", None: "not measured"}
    lines = [
        "== speed targets of issue 10 (informational) ==",
        f"  {'workload':<58}{'value':>10}  floor / goal",
    ]
    for goal in goals:
        value = "-" if goal.value is None else f"{goal.value:.2f}{goal.unit}"
        lines.append(
            f"  {goal.workload:<58}{value:>10}  {goal.floor}: {verdicts[goal.floor_met]}; "
            f"{goal.goal}: {verdicts[goal.goal_met]}"
        )
    return "\n".join(lines)


# Each extra row's table: title, then (column label, result key, width, format) per column.
_EXTRA_TABLES: tuple[tuple[str, str, tuple[tuple[str, str, int, str], ...]], ...] = (
    (
        "ws-echo",
        "WebSocket 32-byte echo, one round trip at a time per connection",
        (
            ("round trips/s", "round_trips_per_second", 15, ",.0f"),
            ("p50 ms", "latency_p50_ms", 9, ".2f"),
            ("p99 ms", "latency_p99_ms", 9, ".2f"),
            ("cpu %", "cpu_percent", 7, ".0f"),
        ),
    ),
    (
        "sse-delay",
        "server-sent events, 6,400 events/s over 64 streams, delay backend -> client",
        (
            ("events/s", "events_per_second", 10, ",.0f"),
            ("p50 ms", "delay_p50_ms", 9, ".2f"),
            ("p99 ms", "delay_p99_ms", 9, ".2f"),
            ("max ms", "delay_max_ms", 9, ".2f"),
            ("lost", "lost", 7, "d"),
            ("cpu %", "cpu_percent", 7, ".0f"),
        ),
    ),
    (
        "idle-memory",
        "resident memory grown by 10,000 idle keep-alive connections",
        (
            ("held", "connections", 7, "d"),
            ("failed", "failed", 8, "d"),
            ("before MB", "rss_before_mb", 11, ".1f"),
            ("after MB", "rss_after_mb", 10, ".1f"),
            ("per 10k MB", "mb_per_10k", 12, ".1f"),
        ),
    ),
)


def render_extra_rows(extras: dict[str, dict[str, dict[str, Any]]]) -> str:
    """The ws-echo, sse-delay and idle-memory tables."""
    lines: list[str] = []
    for row_name, title, columns in _EXTRA_TABLES:
        by_target = extras.get(row_name, {})
        if not by_target:
            continue
        lines.append(f"== {row_name}: {title} ==")
        lines.append(f"{'target':<9}" + "".join(f"{label:>{width}}" for label, _key, width, _f in columns))
        for name in TARGET_ORDER:
            result = by_target.get(name)
            if result is None:
                continue
            cells = []
            for _label, key, width, form in columns:
                value = result.get(key)
                cells.append(f"{'-' if value is None else format(value, form):>{width}}")
            lines.append(f"{LABELS[name]:<9}" + "".join(cells))
        lines.append("")
    return "\n".join(lines).rstrip()


# Issue 12's targets for the request-log rows (the same for `just bench-logs` at 1M entries).
LOG_INDEXER_GOAL_PER_SECOND = 10_000.0
LOG_QUERY_GOAL_P95_MS = 100.0


def log_index_rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(what, value, peer, target: verdict) for the request-log index (log_index.LogIndexResult.to_json()):
    no proxy peer has such an index, so the rows stand beside the issue's targets instead of a ratio."""
    verdicts = {True: "met", False: "NOT met"}
    rows = [
        (
            "indexer",
            f"{result['indexer_entries_per_second']:,.0f} entries/s",
            "no peer",
            f">= {LOG_INDEXER_GOAL_PER_SECOND:,.0f} entries/s: "
            + verdicts[result["indexer_entries_per_second"] >= LOG_INDEXER_GOAL_PER_SECOND],
        )
    ]
    searches = result["search_ms"]
    if searches:
        worst = max(searches, key=lambda name: searches[name][1])
        rows.append(
            (f"search p95, slowest of {len(searches)} shapes ({worst})", *_p95_cells(searches[worst]))
        )
    for label, name in (
        ("stats for a day p95, one proxy", STATS_ONE_HOST),
        (f"stats for a day p95, all {result['hosts']} proxies", STATS_EVERY_HOST),
    ):
        if name in result["stats_ms"]:
            rows.append((label, *_p95_cells(result["stats_ms"][name])))
    rows.append(
        (
            "Redis memory per 1M entries (stream + indexes + aggregates)",
            f"{result['total_mib_per_million']:,.0f} MiB",
            "no peer",
            "no target",
        )
    )
    return rows


def _p95_cells(p50_p95: tuple[float, float] | list[float]) -> tuple[str, str, str]:
    p95 = float(p50_p95[1])
    verdict = "met" if p95 < LOG_QUERY_GOAL_P95_MS else "NOT met"
    return f"{p95:.1f} ms", "no peer", f"p95 < {LOG_QUERY_GOAL_P95_MS:.0f} ms: {verdict}"


def render_log_rows(result: dict[str, Any]) -> str:
    rows = log_index_rows(result)
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    lines = [
        f"== request-log index (issue 12): {result['entries']:,} entries over {result['hosts']} proxies, "
        "one redis-server; no peer has one, so the issue's targets stand in for a ratio ==",
    ]
    for what, value, peer, target in rows:
        lines.append(f"  {what:<{widths[0]}}  {value:>{widths[1]}}  {peer:<{widths[2]}}  {target}")
    return "\n".join(lines)
