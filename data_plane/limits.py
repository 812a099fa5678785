"""Data-plane limits and timeouts, with safe defaults, overridable from the environment.

These are edge-security knobs kept as data (STYLE 9). They are read from `DP_*` environment variables so tests
and operators can tighten them without code; each variable is the field name upper-cased with a `DP_` prefix
(e.g. DP_HEADER_READ_TIMEOUT_SECONDS). An unparsable value is refused at startup with the variable named.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass


class InvalidLimit(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Limits:
    max_header_bytes: int = 16 * 1024  # request line + headers; beyond -> 431
    header_read_timeout_seconds: float = 10.0  # whole request head must arrive within this (slowloris)
    keepalive_idle_timeout_seconds: float = 60.0  # idle client connection between requests
    max_connections: int = 10_000  # per process; beyond -> 503 and close
    upstream_max_idle_per_origin: int = 64
    upstream_idle_seconds: float = 30.0
    max_response_head_bytes: int = 64 * 1024
    shutdown_drain_seconds: float = 20.0  # SIGTERM: in-flight requests get this long to finish

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Limits:
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            name = f"DP_{field.name.upper()}"
            raw = environ.get(name)
            if raw is None or raw == "":
                continue
            try:
                value: float = int(raw) if field.type in ("int", int) else float(raw)
            except ValueError as exc:
                raise InvalidLimit(f"{name}={raw!r} is not a number") from exc
            if value <= 0:
                raise InvalidLimit(f"{name} must be positive, got {raw!r}")
            values[field.name] = value
        return cls(**values)  # type: ignore[arg-type]
