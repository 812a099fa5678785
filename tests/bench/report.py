"""Turn measured runs into ratios, the issue's goals, text tables and the JSON document (no IO here).

A measurement is one target at one size: wrk's result plus the CPU seconds the proxy's process group
used. Ratios are always between runs of the same invocation, so machine speed cancels out; "x" means ours
divided by peer (for latency, below 1 is better; for requests/s and MB/s, above 1 is better).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
    def other_cpu_percent(self) -> float:
        """Percent of one core; above NOISY_OTHER_CPU_PERCENT the figures are disturbed."""
        if self.wrk.duration_seconds <= 0:
            return 0.0
        return 100.0 * self.other_cpu_seconds / self.wrk.duration_seconds

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = self.wrk.to_json()
        out["cpu_seconds"] = None if self.cpu_seconds is None else round(self.cpu_seconds, 3)
        out["cpu_percent"] = None if self.cpu_percent is None else round(self.cpu_percent, 1)
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


def issue_goals(results: dict[str, dict[str, Measurement]]) -> list[dict[str, Any]]:
    """The issue's performance targets, evaluated on this run (informational: a benchmark never fails)."""
    goals: list[dict[str, Any]] = []

    def add(text: str, size: str, peer: str, metric: str, bound: float, higher_is_better: bool) -> None:
        ours, other = results.get(size, {}).get("ours"), results.get(size, {}).get(peer)
        value: float | None = None
        if ours is not None and other is not None:
            value = _ratio(getattr(ours.wrk, metric), getattr(other.wrk, metric))
        met = None if value is None else (value >= bound if higher_is_better else value <= bound)
        goals.append({"goal": text, "ratio": value, "bound": bound, "met": met})

    add("small GET requests/s >= 0.5x Caddy", "small", "caddy", "requests_per_second", 0.5, True)
    add("small GET requests/s >= 1.0x Caddy (team goal)", "small", "caddy", "requests_per_second", 1.0, True)
    add("small GET p99 <= 2x Caddy", "small", "caddy", "latency_p99_ms", 2.0, False)
    add("1 MiB throughput >= 0.5x nginx", "1m", "nginx", "megabytes_per_second", 0.5, True)
    return goals


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def render_table(title: str, by_target: dict[str, Measurement]) -> str:
    header = (
        f"{'target':<9}{'req/s':>12}{'MB/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'cpu %':>7}"
        f"{'other %':>9}{'up conns':>10}{'vs DIRECT':>11}"
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
            f"{_fmt(m.cpu_percent, 0):>7}{m.other_cpu_percent:>9.0f}"
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


def render_goals(goals: list[dict[str, Any]]) -> str:
    lines = ["== issue 3 performance goals (informational) =="]
    for goal in goals:
        verdict = {True: "met", False: "NOT met", None: "not measured"}[goal["met"]]
        ratio = "-" if goal["ratio"] is None else f"{goal['ratio']:.2f}x"
        lines.append(f"  {goal['goal']:<50} {ratio:>8}  {verdict}")
    return "\n".join(lines)
