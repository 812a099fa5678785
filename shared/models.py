"""Pydantic models of everything stored in Redis.

Every stored object carries `schema_version`; a reader that meets a newer version than it knows refuses it
rather than guessing. Models validate at the edge (API input, Redis read); the data plane converts them once
into plain slotted objects for its hot path.
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.hostnames import normalise_hostname

TOKEN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
ADMIN_OWNER = "admin"


def now_seconds() -> float:
    return time.time()


class Stored(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: int = 1


class ApiToken(Stored):
    """An API bearer token. Only the SHA-256 of the secret is stored; the token name is its owner id."""

    name: Annotated[str, Field(pattern=TOKEN_NAME_PATTERN)]
    token_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    cert_email: str = ""
    created_at: float = Field(default_factory=now_seconds)
    created_by: str = ADMIN_OWNER


HeaderName = Annotated[str, Field(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", max_length=256)]


class ProxyTarget(Stored):
    """A public hostname proxied to a backend."""

    hostname: str
    target_url: str
    enabled: bool = True
    enable_http: bool = True
    enable_https: bool = True
    preserve_host_header: bool = True
    verify_upstream_tls: bool = True
    upstream_ca_bundle_pem: str | None = None
    request_headers_set: dict[HeaderName, str] = Field(default_factory=dict)
    request_headers_remove: list[HeaderName] = Field(default_factory=list)
    response_headers_set: dict[HeaderName, str] = Field(default_factory=dict)
    response_headers_remove: list[HeaderName] = Field(default_factory=list)
    connect_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    read_timeout_seconds: float = Field(default=60.0, gt=0, le=86400)
    max_request_body_bytes: int = Field(default=100 * 1024 * 1024, ge=0)
    route_mode: Literal["all", "selective", "none"] = "all"
    enabled_route_ids: list[str] = Field(default_factory=list)
    disabled_route_ids: list[str] = Field(default_factory=list)
    owner: str = ADMIN_OWNER
    created_at: float = Field(default_factory=now_seconds)
    updated_at: float = Field(default_factory=now_seconds)

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        return normalise_hostname(value, allow_wildcard=True)

    @field_validator("target_url")
    @classmethod
    def _target(cls, value: str) -> str:
        return validate_upstream_url(value)

    @field_validator("request_headers_set", "response_headers_set")
    @classmethod
    def _header_values(cls, value: dict[str, str]) -> dict[str, str]:
        for name, header_value in value.items():
            if re.search(r"[\x00-\x08\x0a-\x1f\x7f]", header_value):
                raise ValueError(f"header {name!r} has a control character in its value")
        return value


class Route(Stored):
    """A path/method rule that sends matching requests to a target, ordered by priority (higher first)."""

    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    path_pattern: Annotated[str, Field(min_length=1, max_length=2048)]
    match: Literal["prefix", "regex"] = "prefix"
    methods: list[str] = Field(default_factory=list)
    priority: int = Field(default=500, ge=0, le=999)
    target_url: str | None = None
    target_proxy: str | None = None
    scope: Literal["global", "proxies"] = "global"
    proxy_hostnames: list[str] = Field(default_factory=list)
    enabled: bool = True
    description: str = ""
    owner: str = ADMIN_OWNER
    created_at: float = Field(default_factory=now_seconds)
    updated_at: float = Field(default_factory=now_seconds)

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str]) -> list[str]:
        out = []
        for method in value:
            upper = method.upper()
            if not re.fullmatch(r"[A-Z]{1,20}", upper):
                raise ValueError(f"invalid HTTP method {method!r}")
            out.append(upper)
        return out

    @field_validator("target_url")
    @classmethod
    def _target(cls, value: str | None) -> str | None:
        return None if value is None else validate_upstream_url(value)

    @field_validator("proxy_hostnames")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        return [normalise_hostname(h, allow_wildcard=True) for h in value]

    @model_validator(mode="after")
    def _consistent(self) -> Route:
        if self.match == "regex":
            try:
                re.compile(self.path_pattern)
            except re.error as exc:
                raise ValueError(f"path_pattern is not a valid regular expression: {exc}") from exc
        elif not self.path_pattern.startswith("/"):
            raise ValueError("a prefix path_pattern must start with '/'")
        if (self.target_url is None) == (self.target_proxy is None):
            raise ValueError("exactly one of target_url and target_proxy must be set")
        if self.target_proxy is not None:
            self.target_proxy = normalise_hostname(self.target_proxy, allow_wildcard=False)
        if self.scope == "proxies" and not self.proxy_hostnames:
            raise ValueError("scope 'proxies' needs at least one entry in proxy_hostnames")
        return self


def validate_upstream_url(value: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise ValueError("target URL must be http:// or https://")
    if not parts.hostname:
        raise ValueError("target URL must name a host")
    if parts.username or parts.password:
        raise ValueError("target URL must not carry credentials")
    if parts.query or parts.fragment:
        raise ValueError("target URL must not have a query or fragment")
    try:
        _ = parts.port
    except ValueError as exc:
        raise ValueError(f"target URL has an invalid port: {exc}") from exc
    return value


class ChangeEvent(BaseModel):
    """One entry of the changes stream: what changed, at which config version."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int = 1
    version: int
    kind: Literal["token", "proxy", "route", "certificate", "auth", "service"]
    action: Literal["created", "updated", "deleted"]
    name: str
    owner: str = ADMIN_OWNER
    at: float = Field(default_factory=now_seconds)

    def to_stream_fields(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.model_dump().items()}

    @classmethod
    def from_stream_fields(cls, fields: dict[str, str]) -> ChangeEvent:
        return cls.model_validate(fields)
