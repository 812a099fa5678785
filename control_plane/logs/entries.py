"""One request-log entry as the control plane reads it from the stream (search, tail), and the latency
histogram every aggregate bucket keeps (the indexer's Lua script fills it; stats read percentiles from it).

The data plane writes the fields of data_plane.request_log.RequestLogEntry (query-string values already
redacted, so no secret reaches the stream). Optional fields (`user`, `client_id`, `mcp_method`, `mcp_tool`,
`upstream_error`) are read when present and empty otherwise, so entries of older and newer writers read
alike. Entries are ordered and addressed by their stream id (`<ms>-<seq>`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# Upper bounds (ms) of the latency histogram every aggregate bucket keeps; one more bucket holds the rest.
LATENCY_BOUNDS_MS: tuple[int, ...] = (
    1,
    2,
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1000,
    2500,
    5000,
    10000,
    30000,
    60000,
)


@dataclass(frozen=True, slots=True)
class LogEntry:
    id: str
    time: float
    host: str
    client_ip: str
    method: str
    path: str
    status: int
    bytes_in: int
    bytes_out: int
    duration_seconds: float
    upstream: str
    route_id: str
    request_id: str
    user: str
    client_id: str
    mcp_method: str
    mcp_tool: str
    upstream_error: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def status_class(self) -> str:
        return f"{self.status // 100}xx"

    @property
    def failed_upstream(self) -> bool:
        """The upstream could not be reached or answered badly: named by the data plane, or a 502/504."""
        return bool(self.upstream_error) or (self.status in (502, 504) and bool(self.upstream))


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _float(value: str | None) -> float:
    try:
        return float(value or 0.0)
    except ValueError:
        return 0.0


def parse_entry(entry_id: str, fields: dict[str, str]) -> LogEntry:
    """Never raises: a damaged field reads as empty/zero, so one bad entry cannot stop the indexer."""
    get = fields.get
    return LogEntry(
        id=entry_id,
        time=_float(get("time")) or stream_id_ms(entry_id) / 1000,
        host=get("host", ""),
        client_ip=get("client_ip", ""),
        method=get("method", ""),
        path=get("path", ""),
        status=_int(get("status")),
        bytes_in=_int(get("bytes_in")),
        bytes_out=_int(get("bytes_out")),
        duration_seconds=_float(get("duration_seconds")),
        upstream=get("upstream", ""),
        route_id=get("route_id", ""),
        request_id=get("request_id", ""),
        user=get("user", ""),
        client_id=get("client_id", ""),
        mcp_method=get("mcp_method", ""),
        mcp_tool=get("mcp_tool", ""),
        upstream_error=get("upstream_error", ""),
    )


def stream_id_ms(entry_id: str) -> int:
    return int(entry_id.partition("-")[0])


def stream_id_key(entry_id: str) -> tuple[int, int]:
    """Sortable form of a stream id (string order is wrong: `5-10` < `5-9`)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def percentile_ms(histogram: list[int], fraction: float) -> float | None:
    """Approximate percentile from a bucket histogram: linear within the bucket holding the rank."""
    total = sum(histogram)
    if total == 0:
        return None
    rank = fraction * total
    seen = 0
    for index, count in enumerate(histogram):
        if count and seen + count >= rank:
            if index >= len(LATENCY_BOUNDS_MS):
                return float(LATENCY_BOUNDS_MS[-1])
            low = 0 if index == 0 else LATENCY_BOUNDS_MS[index - 1]
            high = LATENCY_BOUNDS_MS[index]
            return round(low + (high - low) * max(rank - seen, 0) / count, 3)
        seen += count
    return float(LATENCY_BOUNDS_MS[-1])
