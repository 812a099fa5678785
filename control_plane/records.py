"""Records only the control plane reads and writes: API tokens and zone delegations, ACME accounts and the
certificate workflow's events, and the authorization server's state (clients, requests, logins, consents,
codes, grants, refresh records, device logins, signing keys).

The data plane never sees these (its contract with the control plane is shared/models.py); they are stored in
Redis under the keys of shared/keys.py with the same rules: `schema_version`, validated on every read.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.hostnames import normalise_hostname
from shared.models import ADMIN_OWNER, Stored, now_seconds

TOKEN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

# What the admin may grant an ordinary token beyond owning its objects (Docker-managed services):
# `public-ports`: bind service ports on 0.0.0.0 (reachable without the proxy); `host-network`: run services
# with network_mode host (they could listen on any address and port of the host).
TokenGrant = Literal["public-ports", "host-network"]


class ApiToken(Stored):
    """An API bearer token. Only the SHA-256 of the secret is stored; the token name is its owner id."""

    name: Annotated[str, Field(pattern=TOKEN_NAME_PATTERN)]
    token_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    cert_email: str = ""
    created_at: float = Field(default_factory=now_seconds)
    created_by: str = ADMIN_OWNER
    # DNS zones the admin delegated to this token: it may create names (and wildcard proxies) only under them,
    # and no other ordinary token may claim a name inside them. Empty: any free non-wildcard name.
    zones: list[str] = Field(default_factory=list, max_length=100)
    grants: list[TokenGrant] = Field(default_factory=list)

    @field_validator("grants")
    @classmethod
    def _grants(cls, value: list[TokenGrant]) -> list[TokenGrant]:
        return sorted(set(value))

    @field_validator("zones")
    @classmethod
    def _zones(cls, value: list[str]) -> list[str]:
        out: list[str] = []
        for zone in value:
            name = normalise_hostname(zone, allow_wildcard=False)
            if name not in out:
                out.append(name)
        return out


class ZoneDelegation(Stored):
    """Index entry: a DNS zone and the token it is delegated to (shared.keys.token_zones())."""

    zone: str
    token: str


class AcmeAccount(Stored):
    """An ACME account per (directory URL, email); the account key is stored encrypted (context
    "acme-account:<account_id>")."""

    account_id: str
    directory_url: str
    email: str = ""
    account_uri: str
    key_encrypted: str
    created_at: float = Field(default_factory=now_seconds)


class CertificateWanted(BaseModel):
    """A workflow event: issue (or re-check) a certificate, or find one for an HTTPS proxy hostname."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int = 1
    reason: Literal["created", "renew", "convert", "proxy", "schedule", "retry"]
    cert_name: str = ""
    hostname: str = ""
    at: float = Field(default_factory=now_seconds)

    def to_stream_fields(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.model_dump().items()}

    @classmethod
    def from_stream_fields(cls, fields: dict[str, str]) -> CertificateWanted:
        return cls.model_validate(fields)


# ---- OAuth: authorization-server state (not config; TTL'd keys, see shared.keys) ----


class OAuthClient(Stored):
    """A registered OAuth client (RFC 7591). Secrets are stored as SHA-256 only."""

    client_id: str
    client_secret_sha256: str = ""
    registration_token_sha256: str = ""
    client_name: str = ""
    redirect_uris: list[str]
    grant_types: list[str] = Field(default_factory=lambda: ["authorization_code", "refresh_token"])
    response_types: list[str] = Field(default_factory=lambda: ["code"])
    token_endpoint_auth_method: Literal["none", "client_secret_post", "client_secret_basic"] = "none"
    scope: str = ""
    client_uri: str = ""
    logo_uri: str = ""
    contacts: list[str] = Field(default_factory=list)
    software_id: str = ""
    software_version: str = ""
    client_id_issued_at: int = 0
    created_at: float = Field(default_factory=now_seconds)


class AuthorizationRequest(Stored):
    """A validated /authorize request waiting for consent and the upstream login."""

    request_id: str
    upstream_app_hostname: str = ""  # proxy whose GitHub app signs the user in ("" = the default app)
    client_id: str
    client_name: str = ""
    redirect_uri: str
    state: str | None = None
    scope: str
    resources: list[str]
    code_challenge: str
    csrf_token: str
    created_at: float = Field(default_factory=now_seconds)


class UpstreamLogin(Stored):
    """Our state at the upstream identity provider: which request it finishes, and our PKCE verifier
    (encrypted with the KEK, context "oauth-upstream-login:<sha256 of the state>"; the record is filed under
    that hash, never under the state itself)."""

    request_id: str
    code_verifier_encrypted: str
    redirect_uri: str
    upstream_app_hostname: str = ""
    created_at: float = Field(default_factory=now_seconds)


class UserIdentity(BaseModel):
    """Who signed in upstream (GitHub)."""

    model_config = ConfigDict(extra="forbid")
    sub: str
    login: str
    name: str = ""
    email: str = ""
    orgs: list[str] = Field(default_factory=list)


class OAuthConsent(Stored):
    """A remembered approval: `login` allowed `client_id` these scopes for these resources, until
    `expires_at`. A later request is covered only when its scopes and resources are subsets of one
    record's."""

    consent_id: str
    login: str
    client_id: str
    client_name: str = ""
    scopes: list[str]
    resources: list[str]
    created_at: float = Field(default_factory=now_seconds)
    expires_at: float


class AuthorizationCode(Stored):
    client_id: str
    redirect_uri: str
    code_challenge: str
    scope: str
    resources: list[str]
    user: UserIdentity
    created_at: float = Field(default_factory=now_seconds)


class OAuthGrant(Stored):
    """One grant (refresh-token family): everything a token issued under it carries."""

    family_id: str
    client_id: str
    scope: str
    resources: list[str]
    user: UserIdentity
    created_at: float = Field(default_factory=now_seconds)


class RefreshRecord(Stored):
    family_id: str
    client_id: str
    issued_at: float = Field(default_factory=now_seconds)
    rotated_at: float | None = None


class DeviceLogin(Stored):
    """A device-flow login (`mhp oauth login`) backed by the upstream's device flow. The upstream's device
    code is a credential we must send back, so it is encrypted with the KEK (context
    "oauth-device-login:<sha256 of our device code>"); our own device code is stored only as that hash."""

    upstream_device_code_encrypted: str
    client_id: str
    scope: str
    resources: list[str]
    interval_seconds: int = 5
    created_at: float = Field(default_factory=now_seconds)


class OAuthSigningKey(BaseModel):
    """One token-signing key of the ring. The private key (PKCS#8 PEM) is encrypted with the KEK (context
    "oauth-signing-key:<kid>"); `public_jwk` is what the JWKS publishes. A key that stopped signing has
    `retires_at`: its tokens verify until then, and it leaves the ring and the JWKS at that time."""

    model_config = ConfigDict(extra="forbid")
    kid: str = Field(min_length=1)
    private_key_encrypted: str
    public_jwk: dict[str, str]
    created_at: float = Field(default_factory=now_seconds)
    retires_at: float | None = None


class OAuthSigningKeyRing(Stored):
    """The authorization server's signing keys, shared by every control-plane replica."""

    active_kid: str
    keys: list[OAuthSigningKey] = Field(min_length=1)
    updated_at: float = Field(default_factory=now_seconds)

    @model_validator(mode="after")
    def _active_signs(self) -> OAuthSigningKeyRing:
        kids = [key.kid for key in self.keys]
        if len(set(kids)) != len(kids):
            raise ValueError("signing key ids must be unique")
        active = next((key for key in self.keys if key.kid == self.active_kid), None)
        if active is None or active.retires_at is not None:
            raise ValueError("the active signing key must be in the ring and not retiring")
        return self
