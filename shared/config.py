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

    # Local dev loop: port of the private redis-server `just up` starts when REDIS_URL is empty
    EMBEDDED_REDIS_PORT: int = Field(default=6379, ge=1, le=65535)

    @field_validator("TRUSTED_PROXY_CIDRS", "ALLOWED_TARGET_CIDRS")
    @classmethod
    def _cidrs_parse(cls, value: str) -> str:
        for part in _split_csv(value):
            ipaddress.ip_network(part, strict=False)
        return value

    @cached_property
    def trusted_proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(p, strict=False) for p in _split_csv(self.TRUSTED_PROXY_CIDRS))

    @cached_property
    def allowed_target_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(p, strict=False) for p in _split_csv(self.ALLOWED_TARGET_CIDRS))

    @property
    def admin_github_users(self) -> frozenset[str]:
        return frozenset(login.lower() for login in _split_csv(self.ADMIN_GITHUB_USERS))

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


def _split_csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment and the env file; keyword overrides win (used by tests)."""
    path = env_file_path()
    env_file = path if path and os.path.isfile(path) else None
    return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg, arg-type]
