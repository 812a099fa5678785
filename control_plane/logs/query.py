"""What a log search, stats request or tail asks for, parsed and checked at the edge; pure (no I/O).

Times are ISO 8601 (`2026-12-05T10:00:00Z`; no zone means UTC), Unix seconds, or a duration back from now
(`90s`, `15m`, `2h`, `7d`). `LogFilter.matches` is the one definition of every filter: the search applies it
to every candidate, whichever index produced it, so an index only makes a search faster, never different.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from ..errors import InvalidInput
from .entries import LogEntry

DEFAULT_RANGE_SECONDS = 3600.0
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_STATUS = re.compile(r"^([1-5])(?:xx|\d\d)$")
STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")


def invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput(
        f"{field}: {message}", [{"loc": ["query", field], "msg": message, "type": "value_error"}]
    )


def parse_time(text: str, *, now: float, field: str) -> float:
    """Unix seconds from an ISO 8601 time, Unix seconds, or a duration back from `now`."""
    value = text.strip()
    match = _DURATION.match(value)
    if match:
        return now - float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        if number != number or number in (float("inf"), float("-inf")) or not 0 <= number < 1e11:
            raise invalid(field, "Unix seconds out of range")
        return number
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise invalid(
            field,
            "expected an ISO 8601 time (2026-12-05T10:00:00Z), Unix seconds, or a duration like 15m, 2h",
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.timestamp()
    except (OverflowError, ValueError, OSError):
        raise invalid(field, "time out of range") from None


def time_range(since: str | None, until: str | None, *, now: float) -> tuple[float, float]:
    end = parse_time(until, now=now, field="until") if until else now
    start = parse_time(since, now=now, field="since") if since else end - DEFAULT_RANGE_SECONDS
    if start >= end:
        raise invalid("since", "since must be before until")
    return max(start, 0.0), end


@dataclass(frozen=True, slots=True)
class StatusFilter:
    code: int | None  # exact
    klass: int | None  # 4 for 4xx

    @classmethod
    def parse(cls, text: str) -> StatusFilter:
        value = text.strip().lower()
        match = _STATUS.match(value)
        if not match:
            raise invalid("status", "expected a status code (404) or a class (4xx)")
        if value.endswith("xx"):
            return cls(None, int(match.group(1)))
        return cls(int(value), None)

    def matches(self, status: int) -> bool:
        if self.code is not None:
            return status == self.code
        return status // 100 == self.klass

    @property
    def class_digit(self) -> int:
        return self.klass if self.klass is not None else (self.code or 0) // 100


@dataclass(frozen=True, slots=True)
class HostScope:
    """The request hosts an ordinary token may see: those a proxy it owns serves, resolved the way the data
    plane routes (the exact hostname's proxy, else the one with the longest matching wildcard)."""

    owner: str
    exact: Mapping[str, str]  # proxy hostname -> owner
    wildcards: Mapping[str, str]  # suffix of a `*.` proxy -> owner

    @classmethod
    def of(cls, owner: str, proxies: Mapping[str, str]) -> HostScope:
        exact = {h: o for h, o in proxies.items() if not h.startswith("*.")}
        wildcards = {h[2:]: o for h, o in proxies.items() if h.startswith("*.")}
        return cls(owner, exact, wildcards)

    def allows(self, host: str) -> bool:
        owner = self.exact.get(host)
        if owner is None:
            dot = host.find(".")
            while dot >= 0 and owner is None:
                owner = self.wildcards.get(host[dot + 1 :])
                dot = host.find(".", dot + 1)
        return owner == self.owner

    @property
    def own_hosts(self) -> list[str]:
        """The owner's exact hostnames; the whole scope only when it owns no wildcard."""
        return sorted(h for h, o in self.exact.items() if o == self.owner)

    @property
    def owns_wildcards(self) -> bool:
        return self.owner in self.wildcards.values()


def normalise_host(text: str) -> str:
    return text.strip().rstrip(".").lower()


@dataclass(frozen=True, slots=True)
class LogFilter:
    since: float
    until: float
    host: str | None = None
    client_ip: str | None = None
    user: str | None = None
    client_id: str | None = None
    status: StatusFilter | None = None
    method: str | None = None
    path_prefix: str | None = None
    mcp_method: str | None = None
    tool: str | None = None
    request_id: str | None = None
    upstream_error: bool = False
    errors: bool = False
    min_duration_seconds: float | None = None
    # None: every host (the admin); else only what the caller's own proxies serve.
    scope: HostScope | None = None

    def matches(self, entry: LogEntry) -> bool:
        if self.scope is not None and not self.scope.allows(entry.host):
            return False
        if self.host is not None and entry.host != self.host:
            return False
        if self.client_ip is not None and entry.client_ip != self.client_ip:
            return False
        if self.user is not None and entry.user != self.user:
            return False
        if self.client_id is not None and entry.client_id != self.client_id:
            return False
        if self.status is not None and not self.status.matches(entry.status):
            return False
        if self.method is not None and entry.method != self.method:
            return False
        if self.path_prefix is not None and not entry.path.startswith(self.path_prefix):
            return False
        if self.mcp_method is not None and entry.mcp_method != self.mcp_method:
            return False
        if self.tool is not None and entry.mcp_tool != self.tool:
            return False
        if self.request_id is not None and entry.request_id != self.request_id:
            return False
        if self.upstream_error and not entry.failed_upstream:
            return False
        if self.errors and not (entry.status >= 500 or entry.failed_upstream):
            return False
        return self.min_duration_seconds is None or entry.duration_seconds >= self.min_duration_seconds

    def index_choices(self) -> list[list[tuple[str, str]]]:
        """Indexes that hold every match, each a union of (dimension, value) index keys; the search takes
        the one with the fewest entries in range. Empty: only the stream itself holds them all."""
        choices: list[list[tuple[str, str]]] = []
        if self.host is not None:
            choices.append([("host", self.host)])
        elif self.scope is not None and not self.scope.owns_wildcards:
            choices.append([("host", host) for host in self.scope.own_hosts])
        for dimension, value in (
            ("ip", self.client_ip),
            ("user", self.user),
            ("client", self.client_id),
            ("tool", self.tool),
        ):
            if value is not None:
                choices.append([(dimension, value)])
        if self.status is not None and self.status.class_digit in (4, 5):
            klass = f"{self.status.class_digit}xx"
            choices.append([("class", klass)])
            if self.host is not None:
                choices.append([("hclass", f"{self.host}:{klass}")])
        if self.upstream_error:
            choices.append([("err", "1")])
        elif self.errors:
            choices.append([("class", "5xx"), ("err", "1")])
            if self.host is not None:
                choices.append([("hclass", f"{self.host}:5xx"), ("err", "1")])
        return choices
