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
    OAUTH_JWT_PRIVATE_KEY_B64: str = ""

    # ACME
    ACME_DIRECTORY_URL: str = "https://acme-v02.api.letsencrypt.org/directory"
    ACME_STAGING_URL: str = "https://acme-staging-v02.api.letsencrypt.org/directory"
    ACME_EMAIL: str = ""

    # Used by tests that need a real domain (optional)
    TEST_DOMAIN: str = ""
    TEST_EMAIL: str = ""

    # Listeners
    BIND_HOST: str = "0.0.0.0"
    HTTP_PORT: int = Field(default=80, ge=0, le=65535)
    HTTPS_PORT: int = Field(default=443, ge=0, le=65535)
    PROXY_PROTOCOL_PORT: int = Field(default=10001, ge=0, le=65535)
    API_HOST: str = "127.0.0.1"
    API_PORT: int = Field(default=9000, ge=0, le=65535)
    INTERNAL_HOST: str = "127.0.0.1"
    INTERNAL_PORT: int = Field(default=9100, ge=0, le=65535)

    # Edge security
    TRUSTED_PROXY_CIDRS: str = "127.0.0.1/32,::1/128"

    # Data plane tuning
    RECONCILE_INTERVAL_SECONDS: float = Field(default=30.0, gt=0)

    @field_validator("TRUSTED_PROXY_CIDRS")
    @classmethod
    def _cidrs_parse(cls, value: str) -> str:
        for part in _split_csv(value):
            ipaddress.ip_network(part, strict=False)
        return value

    @cached_property
    def trusted_proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(p, strict=False) for p in _split_csv(self.TRUSTED_PROXY_CIDRS))

    @property
    def effective_redis_url(self) -> str:
        """REDIS_URL, or the embedded local Redis `just up` starts when REDIS_URL is empty."""
        return self.REDIS_URL or "redis://127.0.0.1:6379/0"


def _split_csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment and the env file; keyword overrides win (used by tests)."""
    path = env_file_path()
    env_file = path if path and os.path.isfile(path) else None
    return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
