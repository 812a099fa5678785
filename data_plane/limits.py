"""Data-plane limits and timeouts as one frozen value, built once from Settings.

These are edge-security knobs kept as data (STYLE 9): each is a `DP_*` setting in shared/config.py, so it can
be set in the environment or `.env` and is documented with its default in `.env.example`. Validation (positive
numbers) happens in Settings, so a bad value is refused at start-up with the variable named.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.config import Settings


@dataclass(frozen=True, slots=True)
class Limits:
    max_header_bytes: int  # request line + headers; beyond -> 431
    header_read_timeout_seconds: float  # whole request head must arrive within this (slowloris)
    keepalive_idle_timeout_seconds: float  # idle client connection between requests
    max_connections: int  # per process; beyond -> 503 and close
    upstream_max_idle_per_origin: int
    upstream_idle_seconds: float
    max_response_head_bytes: int
    shutdown_drain_seconds: float  # SIGTERM: in-flight requests get this long to finish
    tls_handshake_timeout_seconds: float  # TLS handshake (and a PROXY header before it); then close

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_header_bytes=settings.DP_MAX_HEADER_BYTES,
            header_read_timeout_seconds=settings.DP_HEADER_READ_TIMEOUT_SECONDS,
            keepalive_idle_timeout_seconds=settings.DP_KEEPALIVE_IDLE_TIMEOUT_SECONDS,
            max_connections=settings.DP_MAX_CONNECTIONS,
            upstream_max_idle_per_origin=settings.DP_UPSTREAM_MAX_IDLE_PER_ORIGIN,
            upstream_idle_seconds=settings.DP_UPSTREAM_IDLE_SECONDS,
            max_response_head_bytes=settings.DP_MAX_RESPONSE_HEAD_BYTES,
            shutdown_drain_seconds=settings.DP_SHUTDOWN_DRAIN_SECONDS,
            tls_handshake_timeout_seconds=settings.DP_TLS_HANDSHAKE_TIMEOUT_SECONDS,
        )
