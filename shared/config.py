"""Settings from the environment and `.env` (pydantic-settings).

Every field is documented in `.env.example` with its default; a test keeps the two in step. The env file is
`.env` in the working directory unless MHP_ENV_FILE names another one (tests point it at an empty file so a
developer's `.env` never leaks into a test run). Real environment variables win over the file.
"""

from __future__ import annotations

import ipaddress
import os
from functools import cached_property
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_FILE_VARIABLE = "MHP_ENV_FILE"


def env_file_path() -> str:
    return os.environ.get(ENV_FILE_VARIABLE, ".env")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=True)

    # Redis
    REDIS_URL: str = ""
    REDIS_PASSWORD: str = ""

    # Identity of the deployment
    BASE_DOMAIN: str = "localhost"
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    ADMIN_TOKEN: str = ""
    KEY_ENCRYPTION_KEY_B64: str = ""

    # OAuth / GitHub
    GITHUB_CLIENT_ID: str = ""
    GITHUB_CLIENT_SECRET: str = ""
    # Optional import: the first signing key when Redis has no key ring yet (deployments that kept it in .env)
    OAUTH_JWT_PRIVATE_KEY_B64: str = ""
    # How often each control plane re-reads the signing-key ring (a rotation also wakes it at once)
    OAUTH_SIGNING_KEYS_REFRESH_SECONDS: float = Field(default=30.0, gt=0)
    # Issuer URL override (e.g. http://127.0.0.1:9000 for loopback tests); default https://AUTH_HOST
    OAUTH_ISSUER: str = ""
    # Host of the authorization server; default "auth." + BASE_DOMAIN
    AUTH_HOST: str = ""
    OAUTH_ACCESS_TOKEN_TTL_SECONDS: int = Field(default=3600, ge=60, le=86400)
    OAUTH_REFRESH_TOKEN_TTL_SECONDS: int = Field(default=30 * 86400, ge=300)
    OAUTH_REFRESH_GRACE_SECONDS: int = Field(default=30, ge=0, le=600)
    OAUTH_CODE_TTL_SECONDS: int = Field(default=60, ge=5, le=600)
    OAUTH_CLIENT_TTL_SECONDS: int = Field(default=90 * 86400, ge=3600)
    # A self-registered client nobody has used yet expires after this long (first use renews to the above)
    OAUTH_UNUSED_CLIENT_TTL_SECONDS: int = Field(default=86400, ge=60)
    OAUTH_CONSENT_TTL_SECONDS: int = Field(default=30 * 86400, ge=60)
    GITHUB_AUTHORIZE_URL: str = "https://github.com/login/oauth/authorize"
    GITHUB_TOKEN_URL: str = "https://github.com/login/oauth/access_token"
    GITHUB_DEVICE_CODE_URL: str = "https://github.com/login/device/code"
    GITHUB_API_URL: str = "https://api.github.com"
    # Who signs users in: GitHub (default) or any OpenID Connect provider
    UPSTREAM_IDENTITY_PROVIDER: Literal["github", "oidc"] = "github"
    OIDC_ISSUER: str = ""
    OIDC_CLIENT_ID: str = ""
    OIDC_CLIENT_SECRET: str = ""
    OIDC_SCOPES: str = "openid profile email"
    OIDC_LOGIN_CLAIM: str = "preferred_username"
    OIDC_GROUPS_CLAIM: str = "groups"
    # GitHub logins (comma-separated) whose `mhp oauth login` tokens act as ADMIN_TOKEN on the management API
    ADMIN_GITHUB_USERS: str = ""
    # Client ID Metadata Documents may be fetched from private/loopback addresses (tests only; SSRF guard)
    OAUTH_CIMD_ALLOW_PRIVATE_NETWORKS: bool = False

    # ACME
    ACME_DIRECTORY_URL: str = "https://acme-v02.api.letsencrypt.org/directory"
    ACME_STAGING_URL: str = "https://acme-staging-v02.api.letsencrypt.org/directory"
    ACME_EMAIL: str = ""
    # CA bundle for the ACME server's own HTTPS certificate (tests: Pebble); empty = system trust store
    ACME_CA_BUNDLE: str = ""
    # Background issuance worker (workflow consumer + renewal scheduler) in the control plane
    ACME_WORKER_ENABLED: bool = True
    # Workflow events (ACME, services) whose handler failed this many deliveries go to a dead-letter stream
    WORKFLOW_MAX_DELIVERIES: int = Field(default=5, ge=1, le=1000)
    ACME_RENEWAL_CHECK_INTERVAL_SECONDS: float = Field(default=86400.0, gt=0)
    ACME_RENEW_BEFORE_DAYS: float = Field(default=30.0, ge=0)
    ACME_RETRY_BASE_SECONDS: float = Field(default=60.0, gt=0)
    ACME_RETRY_MAX_SECONDS: float = Field(default=6 * 3600.0, gt=0)
    ACME_ORDER_TIMEOUT_SECONDS: float = Field(default=300.0, gt=0)
    ACME_CHALLENGE_TTL_SECONDS: int = Field(default=3600, gt=0)
    ACME_LOCK_LEASE_SECONDS: float = Field(default=60.0, gt=0)
    ACME_AUTO_ENVIRONMENT: Literal["staging", "production"] = "production"
    # CN of the self-signed certificate served for unknown SNI names (empty: BASE_DOMAIN)
    FALLBACK_CERT_COMMON_NAME: str = ""
    # Old key-encryption keys, comma-separated base64; they only decrypt (KEK rotation)
    KEY_ENCRYPTION_PREVIOUS_KEYS_B64: str = ""

    # Listeners
    BIND_HOST: str = "0.0.0.0"
    HTTP_PORT: int = Field(default=80, ge=0, le=65535)
    HTTPS_PORT: int = Field(default=443, ge=0, le=65535)
    PROXY_PROTOCOL_PORT: int = Field(default=10001, ge=0, le=65535)
    PROXY_PROTOCOL_TLS_PORT: int = Field(default=0, ge=0, le=65535)
    HTTPS_REDIRECT_PORT: int = Field(default=0, ge=0, le=65535)
    API_HOST: str = "127.0.0.1"
    API_PORT: int = Field(default=9000, ge=0, le=65535)
    INTERNAL_HOST: str = "127.0.0.1"
    INTERNAL_PORT: int = Field(default=9100, ge=0, le=65535)
    # The control plane's Prometheus /metrics, on INTERNAL_HOST (0 = off)
    CP_METRICS_PORT: int = Field(default=9099, ge=0, le=65535)

    # Edge security
    TRUSTED_PROXY_CIDRS: str = "127.0.0.1/32,::1/128"
    # Control plane: request bodies are cut off while streaming past these sizes (413)
    CP_MAX_BODY_BYTES_PUBLIC: int = Field(default=64 * 1024, ge=1024)
    CP_MAX_BODY_BYTES_API: int = Field(default=1024 * 1024, ge=1024)
    # Control plane: per-client-IP limits per RATE_LIMIT_WINDOW_SECONDS, shared by replicas (0 = off)
    RATE_LIMIT_WINDOW_SECONDS: int = Field(default=60, ge=1, le=3600)
    RATE_LIMIT_REGISTER: int = Field(default=20, ge=0)
    RATE_LIMIT_TOKEN: int = Field(default=300, ge=0)
    RATE_LIMIT_INTERACTIVE: int = Field(default=120, ge=0)
    RATE_LIMIT_API_AUTH_FAILURES: int = Field(default=30, ge=0)
    # Non-public address ranges (comma-separated CIDRs) that proxies and routes of ordinary tokens may target;
    # public addresses are always allowed, admin-owned targets are never restricted (shared/target_policy.py)
    ALLOWED_TARGET_CIDRS: str = ""
    # Audit trails (Redis streams, longer-lived than request logs): management-API changes and OAuth events,
    # each bounded by age and by entry count (0 = no count bound)
    AUDIT_RETENTION_DAYS: float = Field(default=90.0, gt=0)
    AUDIT_MAX_ENTRIES: int = Field(default=200_000, ge=0)
    OAUTH_AUDIT_RETENTION_DAYS: float = Field(default=30.0, gt=0)
    OAUTH_AUDIT_MAX_ENTRIES: int = Field(default=500_000, ge=0)

    # Data plane tuning
    RECONCILE_INTERVAL_SECONDS: float = Field(default=30.0, gt=0)
    # Data-plane limits and timeouts (edge security as data; safe defaults)
    DP_MAX_HEADER_BYTES: int = Field(default=16 * 1024, gt=0)
    DP_HEADER_READ_TIMEOUT_SECONDS: float = Field(default=10.0, gt=0)
    DP_KEEPALIVE_IDLE_TIMEOUT_SECONDS: float = Field(default=60.0, gt=0)
    DP_MAX_CONNECTIONS: int = Field(default=10_000, gt=0)
    DP_UPSTREAM_MAX_IDLE_PER_ORIGIN: int = Field(default=64, gt=0)
    DP_UPSTREAM_IDLE_SECONDS: float = Field(default=30.0, gt=0)
    DP_MAX_RESPONSE_HEAD_BYTES: int = Field(default=64 * 1024, gt=0)
    DP_SHUTDOWN_DRAIN_SECONDS: float = Field(default=20.0, gt=0)
    DP_TLS_HANDSHAKE_TIMEOUT_SECONDS: float = Field(default=10.0, gt=0)
    # Request-log entries waiting for Redis (an outage): bounded by memory and age, the oldest dropped beyond
    DP_LOG_BACKLOG_MAX_BYTES: int = Field(default=64 * 1024 * 1024, ge=64 * 1024)
    DP_LOG_BACKLOG_MAX_AGE_SECONDS: float = Field(default=60.0, gt=0)

    # Request log (data plane writes, control plane indexes; see control_plane/logs/)
    # Entries older than this are trimmed from the stream, with their index entries
    LOG_RETENTION_SECONDS: int = Field(default=7 * 86400, ge=60)
    # At most this many entries are kept (the data plane trims to it on write, the trimmer too)
    LOG_RETENTION_MAX_ENTRIES: int = Field(default=1_000_000, ge=1000)
    # Per-minute aggregates live this long, per-hour ones LOG_HOUR_AGGREGATE_RETENTION_SECONDS
    LOG_MINUTE_AGGREGATE_RETENTION_SECONDS: int = Field(default=2 * 86400, ge=3600)
    LOG_HOUR_AGGREGATE_RETENTION_SECONDS: int = Field(default=35 * 86400, ge=86400)
    # Seconds between retention passes (one replica per pass)
    LOG_TRIM_INTERVAL_SECONDS: float = Field(default=60.0, gt=0)
    # The indexer (a consumer group on the stream) runs in every control-plane replica unless turned off
    LOG_INDEXER_ENABLED: bool = True
    LOG_INDEXER_BATCH: int = Field(default=500, ge=1, le=10_000)
    # Entries a stopped replica left unacknowledged this long are taken over (XAUTOCLAIM)
    LOG_INDEXER_CLAIM_IDLE_SECONDS: float = Field(default=60.0, gt=0)
    # `slow` in searches: requests that took at least this long
    LOG_SLOW_THRESHOLD_SECONDS: float = Field(default=1.0, gt=0)
    # Entries one search reads at most before answering with what it found and a cursor to go on
    LOG_SEARCH_SCAN_LIMIT: int = Field(default=20_000, ge=100)
    # A live tail (SSE) ends after this long (clients resume with `after`); at most this many per replica
    LOG_TAIL_MAX_SECONDS: float = Field(default=300.0, gt=0)
    LOG_TAIL_MAX_STREAMS: int = Field(default=32, ge=1)

    # Local dev loop: port of the private redis-server `just up` starts when REDIS_URL is empty
    EMBEDDED_REDIS_PORT: int = Field(default=6379, ge=1, le=65535)

    # Docker-managed services (control plane). Giving the control plane a Docker engine is giving it root on
    # that host, so it is off until an operator names the engine.
    DOCKER_URL: str = ""
    DOCKER_BUILD_ROOT: str = ""
    DOCKER_BUILD_MAX_CONTEXT_BYTES: int = Field(default=100 * 1024 * 1024, gt=0)
    DOCKER_IMAGE_ALLOWLIST: str = ""
    DOCKER_TENANT_NETWORKS: str = ""
    DOCKER_DEFAULT_NETWORK: str = "host"
    DOCKER_SERVICE_HOST: str = "127.0.0.1"
    SERVICE_DEFAULT_MEMORY_LIMIT: str = "512m"
    SERVICE_TENANT_MAX_MEMORY_LIMIT: str = "2g"
    SERVICE_TENANT_MAX_CPU_LIMIT: float = Field(default=2.0, gt=0)
    SERVICE_TENANT_CAP_ADD: str = "CHOWN,DAC_OVERRIDE,FOWNER,SETGID,SETUID,NET_BIND_SERVICE,KILL"
    SERVICE_DEFAULT_PIDS_LIMIT: int = Field(default=512, gt=0)
    SERVICE_STOP_TIMEOUT_SECONDS: int = Field(default=10, ge=0, le=600)
    SERVICE_RECONCILE_INTERVAL_SECONDS: float = Field(default=30.0, gt=0)
    SERVICE_CLAIM_IDLE_SECONDS: float = Field(default=120.0, gt=0)
    SERVICE_LOCK_LEASE_SECONDS: float = Field(default=30.0, gt=0)
    # Host ports handed out to services and `mhp port allocate` (comma-separated ranges), and more to skip
    PORT_RANGES: str = "20000-29999"
    PORT_RESTRICTED: str = ""
    PORT_RECONCILE_GRACE_SECONDS: float = Field(default=300.0, gt=0)

    @field_validator("SERVICE_DEFAULT_MEMORY_LIMIT", "SERVICE_TENANT_MAX_MEMORY_LIMIT")
    @classmethod
    def _byte_sizes_parse(cls, value: str) -> str:
        parse_byte_size(value)
        return value

    @field_validator("PORT_RANGES")
    @classmethod
    def _port_ranges_parse(cls, value: str) -> str:
        if not parse_port_ranges(value):
            raise ValueError("PORT_RANGES needs at least one range, e.g. 20000-29999")
        return value

    @field_validator("PORT_RESTRICTED")
    @classmethod
    def _ports_parse(cls, value: str) -> str:
        parse_port_ranges(value)
        return value

    @field_validator("TRUSTED_PROXY_CIDRS", "ALLOWED_TARGET_CIDRS")
    @classmethod
    def _cidrs_parse(cls, value: str) -> str:
        for part in split_csv(value):
            ipaddress.ip_network(part, strict=False)
        return value

    @cached_property
    def trusted_proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(p, strict=False) for p in split_csv(self.TRUSTED_PROXY_CIDRS))

    @cached_property
    def allowed_target_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(p, strict=False) for p in split_csv(self.ALLOWED_TARGET_CIDRS))

    @cached_property
    def port_ranges(self) -> tuple[tuple[int, int], ...]:
        return parse_port_ranges(self.PORT_RANGES)

    @cached_property
    def extra_restricted_ports(self) -> frozenset[int]:
        return frozenset(
            p for low, high in parse_port_ranges(self.PORT_RESTRICTED) for p in range(low, high + 1)
        )

    @property
    def admin_github_users(self) -> frozenset[str]:
        return frozenset(login.lower() for login in split_csv(self.ADMIN_GITHUB_USERS))

    @property
    def auth_host(self) -> str:
        """Host of the OAuth authorization server: AUTH_HOST, else auth.<BASE_DOMAIN>."""
        return (self.AUTH_HOST or f"auth.{self.BASE_DOMAIN}").strip().rstrip(".").lower()

    @property
    def oauth_issuer(self) -> str:
        """The issuer URL (no trailing slash): OAUTH_ISSUER, else https://<auth host>."""
        return (self.OAUTH_ISSUER or f"https://{self.auth_host}").rstrip("/")

    @property
    def effective_redis_url(self) -> str:
        """REDIS_URL, or the embedded local Redis `just up` starts when REDIS_URL is empty."""
        return self.REDIS_URL or f"redis://127.0.0.1:{self.EMBEDDED_REDIS_PORT}/0"


def split_csv(value: str) -> list[str]:
    """The items of a comma-separated setting, stripped, empty ones dropped."""
    return [part.strip() for part in value.split(",") if part.strip()]


_BYTE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_byte_size(value: str) -> int:
    """Docker's memory notation: `512m`, `2g`, `65536` (bytes), `64k`; binary units, case-insensitive."""
    text = value.strip().lower().removesuffix("ib").removesuffix("b") if value.strip() else ""
    number, unit = (text[:-1], text[-1]) if text and text[-1] in "kmg" else (text, "")
    if not number.isdigit():
        raise ValueError(f"{value!r} is not a size like 512m, 2g or 65536")
    return int(number) * _BYTE_UNITS[unit]


def parse_port_ranges(value: str) -> tuple[tuple[int, int], ...]:
    """`20000-29999,31000` -> ((20000, 29999), (31000, 31000)); every port within 1..65535."""
    ranges: list[tuple[int, int]] = []
    for part in split_csv(value):
        low_text, _, high_text = part.partition("-")
        try:
            low, high = int(low_text), int(high_text or low_text)
        except ValueError as exc:
            raise ValueError(f"{part!r} is not a port or a range like 20000-29999") from exc
        if not 1 <= low <= high <= 65535:
            raise ValueError(f"{part!r} is not a range of ports within 1-65535")
        ranges.append((low, high))
    return tuple(ranges)


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment and the env file; keyword overrides win (used by tests)."""
    path = env_file_path()
    env_file = path if path and os.path.isfile(path) else None
    return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg, arg-type]
