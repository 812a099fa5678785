"""The contract between the planes: what the control plane writes to Redis and data planes read.

Every stored object carries `schema_version`; a reader that meets a newer version than it knows refuses it
rather than guessing. Models validate at the edge (API input, Redis read); the data plane converts them once
into plain slotted objects for its hot path.
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from shared.hostnames import normalise_hostname
from shared.route_pattern import InvalidRoutePattern, compile_route_pattern

ADMIN_OWNER = "admin"


def now_seconds() -> float:
    return time.time()


class Stored(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: int = 1


HeaderName = Annotated[str, Field(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", max_length=256)]


HSTS_MAX_AGE_LIMIT_SECONDS = 2 * 365 * 24 * 3600


class ProxyTarget(Stored):
    """A public hostname proxied to a backend."""

    hostname: str
    target_url: str
    enabled: bool = True
    enable_http: bool = True
    enable_https: bool = True
    # Plain-HTTP requests get 308 to https:// once a certificate covering the host is being served.
    redirect_http_to_https: bool = True
    # Strict-Transport-Security max-age on HTTPS responses; 0 = no header. At most two years.
    hsts_max_age_seconds: int = Field(default=0, ge=0, le=HSTS_MAX_AGE_LIMIT_SECONDS)
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
    # Request paths may carry %2F / %5C (kept encoded, never a segment boundary); off by default because
    # upstreams disagree on whether they split a path, which lets one path be judged and served differently.
    allow_encoded_slashes: bool = False
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

    # Field order matters to the validators below: each may read the fields declared before it, so every
    # error names the field it is about (a 422 says `path_pattern`, not the whole body).
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    match: Literal["prefix", "regex"] = "prefix"
    path_pattern: Annotated[str, Field(min_length=1, max_length=2048)]
    methods: list[str] = Field(default_factory=list)
    priority: int = Field(default=500, ge=0, le=999)
    target_url: str | None = None
    target_proxy: str | None = Field(default=None, validate_default=True)
    scope: Literal["global", "proxies"] = "global"
    proxy_hostnames: list[str] = Field(default_factory=list, validate_default=True)
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

    @field_validator("path_pattern")
    @classmethod
    def _pattern(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("match") == "regex":
            try:
                compile_route_pattern(value)
            except InvalidRoutePattern as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from exc
        elif not value.startswith("/"):
            raise ValueError("a prefix path_pattern must start with '/'")
        return value

    @field_validator("target_proxy")
    @classmethod
    def _one_target(cls, value: str | None, info: ValidationInfo) -> str | None:
        # A target_url that failed its own validation is not in info.data; its error is reported already.
        if "target_url" in info.data and (info.data["target_url"] is None) == (value is None):
            raise ValueError("exactly one of target_url and target_proxy must be set")
        return None if value is None else normalise_hostname(value, allow_wildcard=False)

    @field_validator("proxy_hostnames")
    @classmethod
    def _hosts(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if info.data.get("scope") == "proxies" and not value:
            raise ValueError("scope 'proxies' needs at least one entry in proxy_hostnames")
        return [normalise_hostname(h, allow_wildcard=True) for h in value]


# ---- Services as targets: `service://NAME[/path]` (issue 11) ----

SERVICE_SCHEME = "service"
# A DNS label, so that a service's own proxy `NAME.BASE_DOMAIN` is a valid hostname.
SERVICE_NAME_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"


def service_reference(url: str) -> tuple[str, str] | None:
    """`service://NAME/base` -> ("NAME", "/base"); None when `url` does not name a service."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme != SERVICE_SCHEME:
        return None
    return parts.netloc, parts.path.rstrip("/")


def _validate_service_url(value: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if not re.fullmatch(SERVICE_NAME_PATTERN, parts.netloc):
        raise ValueError("a service:// target must name a service: service://NAME[/path]")
    if parts.query or parts.fragment:
        raise ValueError("target URL must not have a query or fragment")
    return value


class ServiceEndpoint(Stored):
    """Where `service://NAME` targets go (shared.keys.service_endpoints()). `external`: a URL the owner
    named through the API (an ordinary token's is checked against the SSRF policy like any target).
    `managed`: the address the control plane's controller found for a container it runs (the host port it
    allocated, or the container's address on a named network); the owner never writes it."""

    name: Annotated[str, Field(pattern=SERVICE_NAME_PATTERN)]
    url: str
    kind: Literal["external", "managed"]
    owner: str = ADMIN_OWNER
    description: Annotated[str, Field(max_length=500)] = ""
    created_at: float = Field(default_factory=now_seconds)
    updated_at: float = Field(default_factory=now_seconds)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if service_reference(value) is not None:
            raise ValueError("a service's URL cannot be another service:// reference")
        return validate_upstream_url(value)


def validate_upstream_url(value: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme == SERVICE_SCHEME:
        return _validate_service_url(value)
    if parts.scheme not in ("http", "https"):
        raise ValueError("target URL must be http://, https:// or service://NAME")
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


# ---- Certificates (ACME) ----

CERT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MAX_CERTIFICATE_DOMAINS = 100


class Certificate(Stored):
    """A certificate for 1..100 non-wildcard domains, issued over ACME HTTP-01.

    `status` is the state of the latest issuance attempt: pending (wanted, not yet issued), active (a cert is
    stored), failed (`error` holds the CA's reason; retried at `next_retry_at`). A cert that fails to *renew*
    stays active while its stored chain is still valid. The private key is only ever stored encrypted
    (shared.encryption, context "certificate:<cert_name>").
    """

    cert_name: Annotated[str, Field(pattern=CERT_NAME_PATTERN)]
    domains: Annotated[list[str], Field(min_length=1, max_length=MAX_CERTIFICATE_DOMAINS)]
    email: str = ""
    environment: Literal["staging", "production"] = "production"
    directory_url: str
    status: Literal["pending", "active", "failed"] = "pending"
    error: str = ""
    fullchain_pem: str = ""
    private_key_encrypted: str = ""
    issuer: str = ""
    serial: str = ""
    not_before: float | None = None
    not_after: float | None = None
    fingerprint_sha256: str = ""
    # What the stored chain was issued for: a change of domains or directory means a new issuance is due.
    issued_at: float | None = None
    issued_domains: list[str] = Field(default_factory=list)
    issued_directory_url: str = ""
    renew_requested_at: float | None = None
    auto: bool = False  # requested automatically for an HTTPS proxy rather than through the API
    owner: str = ADMIN_OWNER
    created_at: float = Field(default_factory=now_seconds)
    updated_at: float = Field(default_factory=now_seconds)
    attempts: int = 0
    next_retry_at: float | None = None

    @field_validator("domains")
    @classmethod
    def _domains(cls, value: list[str]) -> list[str]:
        out: list[str] = []
        for domain in value:
            if domain.strip().startswith("*"):
                raise ValueError(f"{domain!r}: wildcard names cannot be validated over HTTP-01")
            name = normalise_hostname(domain, allow_wildcard=False)
            if name not in out:
                out.append(name)
        return out

    @property
    def has_chain(self) -> bool:
        return bool(self.fullchain_pem and self.private_key_encrypted)


class FallbackCertificate(Stored):
    """The self-signed certificate served for unknown SNI names; one for every data-plane replica (key
    encrypted with context "fallback-certificate")."""

    common_name: str
    cert_pem: str
    private_key_encrypted: str
    created_at: float = Field(default_factory=now_seconds)


# ---- OAuth: per-proxy protection (config, kind "auth") ----

IdentityField = Literal["login", "sub", "email", "orgs", "scope", "client_id", "name"]
DEFAULT_MCP_SCOPE = "mcp"


def canonical_resource_uri(value: str) -> str:
    """A protected resource URI as both planes compare it (RFC 8707 / 9728): absolute http(s), no fragment
    or query, scheme and host lower-case, default port dropped, no trailing slash (except none at all)."""
    from urllib.parse import urlsplit

    parts = urlsplit(value.strip())
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("resource must be an absolute http:// or https:// URI")
    if not parts.hostname:
        raise ValueError("resource must name a host")
    if parts.fragment or parts.query or parts.username or parts.password:
        raise ValueError("resource must not carry a query, fragment or credentials")
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"resource has an invalid port: {exc}") from exc
    host = parts.hostname.lower().rstrip(".")
    if ":" in host:
        host = f"[{host}]"
    default_port = 443 if scheme == "https" else 80
    netloc = host if port in (None, default_port) else f"{host}:{port}"
    path = parts.path.rstrip("/")
    return f"{scheme}://{netloc}{path}"


class ScopeRule(BaseModel):
    """Scopes a request needs when its path starts with `path_prefix` (and its method is listed, or any)."""

    model_config = ConfigDict(extra="forbid")
    path_prefix: Annotated[str, Field(pattern=r"^/", max_length=2048)]
    methods: list[str] = Field(default_factory=list)
    scopes: list[Annotated[str, Field(pattern=r"^[\x21\x23-\x5b\x5d-\x7e]+$")]] = Field(default_factory=list)

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str]) -> list[str]:
        out = [m.upper() for m in value]
        for method in out:
            if not re.fullmatch(r"[A-Z]{1,20}", method):
                raise ValueError(f"invalid HTTP method {method!r}")
        return out


ScopeToken = Annotated[str, Field(pattern=r"^[\x21\x23-\x5b\x5d-\x7e]+$", max_length=128)]


def _default_identity_headers() -> dict[str, IdentityField]:
    return {"X-Auth-User": "login", "X-Auth-Subject": "sub", "X-Auth-Scopes": "scope"}


class ProxyAuthConfig(Stored):
    """OAuth protection of one proxy. `allowed_users` / `allowed_orgs` are GitHub logins / org logins;
    `*` in allowed_users admits any signed-in user. A request is allowed when its token's login is listed,
    or one of its orgs is listed. `required_scopes` apply unless a ScopeRule (first match) says otherwise.
    `public_paths` are path prefixes that never need a token. `identity_headers` maps a header sent upstream
    to the token field it carries; client-sent copies of those (and X-Auth-*, X-Forwarded-User) are stripped.
    """

    hostname: str
    enabled: bool = True
    allowed_users: list[str] = Field(default_factory=list)
    allowed_orgs: list[str] = Field(default_factory=list)
    required_scopes: list[ScopeToken] = Field(default_factory=lambda: [DEFAULT_MCP_SCOPE])
    scope_rules: list[ScopeRule] = Field(default_factory=list)
    public_paths: list[Annotated[str, Field(pattern=r"^/", max_length=2048)]] = Field(default_factory=list)
    identity_headers: dict[HeaderName, IdentityField] = Field(default_factory=_default_identity_headers)
    # Per-proxy GitHub OAuth app (overrides GITHUB_CLIENT_ID/SECRET for logins to this resource). The secret
    # is only ever stored encrypted (shared.encryption, context "github-app:<hostname>") and never returned.
    github_client_id: str = ""
    github_client_secret_encrypted: str = ""
    owner: str = ADMIN_OWNER
    created_at: float = Field(default_factory=now_seconds)
    updated_at: float = Field(default_factory=now_seconds)
    # Browser origins (scheme://host[:port]) allowed to call the resource; empty = no Origin check. A request
    # carrying another Origin gets 403 (DNS rebinding / cross-site calls). The resource's own origin is
    # always allowed.
    allowed_origins: list[str] = Field(default_factory=list)
    # OAuth client ids whose client_credentials tokens (no user behind them) may call the resource. User
    # tokens are never admitted by this list, and machine tokens never by allowed_users / allowed_orgs.
    allowed_clients: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=100
    )

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        return normalise_hostname(value, allow_wildcard=True)

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        out: list[str] = []
        for origin in value:
            canonical = canonical_resource_uri(origin)
            if canonical.count("/") != 2:
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port], no path)")
            if canonical not in out:
                out.append(canonical)
        return out

    @field_validator("allowed_users", "allowed_orgs")
    @classmethod
    def _logins(cls, value: list[str]) -> list[str]:
        out: list[str] = []
        for login in value:
            name = login.strip().lower()
            if name != "*" and not re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{0,38})", name):
                raise ValueError(f"{login!r} is not a GitHub login (or '*')")
            if name not in out:
                out.append(name)
        return out


class ProxyResource(Stored):
    """Protected Resource Metadata fields (RFC 9728) of one protected proxy. The resource URI is
    scheme://<hostname>[:port]<path> as the client typed it; `path` is "" for the whole host."""

    hostname: str
    path: Annotated[str, Field(pattern=r"^(/[^?#\s]*)?$", max_length=2048)] = "/mcp"
    scopes_supported: list[ScopeToken] = Field(default_factory=lambda: [DEFAULT_MCP_SCOPE])
    resource_name: str = ""
    resource_documentation: str = ""
    owner: str = ADMIN_OWNER
    updated_at: float = Field(default_factory=now_seconds)

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        return normalise_hostname(value, allow_wildcard=True)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return value.rstrip("/")
