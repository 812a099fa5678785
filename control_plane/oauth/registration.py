"""Dynamic Client Registration (RFC 7591) and its management protocol (RFC 7592).

Anyone may register (MCP clients do so on first contact); duplicate registrations are fine. A client gets a
registration access token, shown once and stored hashed, that reads, replaces or deletes the registration at
`registration_client_uri`. Clients with token_endpoint_auth_method other than `none` also get a secret
(stored hashed). A fresh registration lives OAUTH_UNUSED_CLIENT_TTL_SECONDS (a day by default) until its
first use; every use renews it to OAUTH_CLIENT_TTL_SECONDS. So a flood of registrations nobody uses (the
endpoint is open to anyone, rate-limited per IP) ages out quickly, while clients in use stay registered.
The metadata is bounded per field and as a whole (MAX_REGISTRATION_BYTES of JSON).
"""

from __future__ import annotations

import secrets
import time
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from control_plane.records import OAuthClient
from shared.secrets import constant_time_equal, token_sha256

from .errors import OAuthError
from .redirect_uris import InvalidRedirectUri, check_registrable
from .state_store import OAuthState

SUPPORTED_GRANTS = frozenset({"authorization_code", "refresh_token"})
MAX_REDIRECT_URIS = 10
MAX_URI_LENGTH = 2000
# The whole registration request; a client's metadata is a few hundred bytes.
MAX_REGISTRATION_BYTES = 16 * 1024


class ClientMetadata(BaseModel):
    """What a client may send (RFC 7591 §2). Unknown fields are ignored, as the RFC requires."""

    model_config = ConfigDict(extra="ignore")
    redirect_uris: list[Annotated[str, Field(max_length=MAX_URI_LENGTH)]] = Field(default_factory=list)
    client_name: str = Field(default="", max_length=200)
    token_endpoint_auth_method: str = "client_secret_basic"
    grant_types: list[str] = Field(default_factory=lambda: ["authorization_code"])
    response_types: list[str] = Field(default_factory=lambda: ["code"])
    scope: str = Field(default="", max_length=1000)
    client_uri: str = Field(default="", max_length=2000)
    logo_uri: str = Field(default="", max_length=2000)
    contacts: list[Annotated[str, Field(max_length=320)]] = Field(default_factory=list, max_length=10)
    software_id: str = Field(default="", max_length=200)
    software_version: str = Field(default="", max_length=100)


def _invalid(description: str, error: str = "invalid_client_metadata") -> OAuthError:
    return OAuthError(error, description)


def parse_metadata(body: Any) -> ClientMetadata:
    if not isinstance(body, dict):
        raise _invalid("the registration request must be a JSON object")
    # Clients send absent metadata as null (e.g. "client_uri": null); treat it as not sent.
    body = {k: v for k, v in body.items() if v is not None}
    try:
        metadata = ClientMetadata.model_validate(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        raise _invalid(f"{field}: {first['msg']}") from exc
    if not metadata.redirect_uris:
        raise _invalid("redirect_uris is required", "invalid_redirect_uri")
    if len(metadata.redirect_uris) > MAX_REDIRECT_URIS:
        raise _invalid(f"at most {MAX_REDIRECT_URIS} redirect_uris", "invalid_redirect_uri")
    for uri in metadata.redirect_uris:
        try:
            check_registrable(uri)
        except InvalidRedirectUri as exc:
            raise _invalid(str(exc), "invalid_redirect_uri") from exc
    if metadata.token_endpoint_auth_method not in ("none", "client_secret_post", "client_secret_basic"):
        raise _invalid(
            f"token_endpoint_auth_method {metadata.token_endpoint_auth_method!r} is not supported "
            "(none, client_secret_post, client_secret_basic)"
        )
    unsupported = sorted(set(metadata.grant_types) - SUPPORTED_GRANTS)
    if unsupported:
        raise _invalid(f"grant_types {unsupported} are not supported (authorization_code, refresh_token)")
    if "authorization_code" not in metadata.grant_types:
        raise _invalid("grant_types must include authorization_code")
    if metadata.response_types != ["code"]:
        raise _invalid('response_types must be ["code"]')
    return metadata


def client_view(client: OAuthClient, issuer: str) -> dict[str, Any]:
    """The registration response body, without secrets (those are added only when freshly issued)."""
    view: dict[str, Any] = {
        "client_id": client.client_id,
        "client_id_issued_at": client.client_id_issued_at,
        "client_name": client.client_name,
        "redirect_uris": client.redirect_uris,
        "grant_types": client.grant_types,
        "response_types": client.response_types,
        "token_endpoint_auth_method": client.token_endpoint_auth_method,
        "registration_client_uri": f"{issuer}/register/{client.client_id}",
    }
    for name in ("scope", "client_uri", "logo_uri", "software_id", "software_version"):
        if getattr(client, name):
            view[name] = getattr(client, name)
    if client.contacts:
        view["contacts"] = client.contacts
    if client.token_endpoint_auth_method != "none":
        view["client_secret_expires_at"] = 0
    return view


class Registrations:
    def __init__(
        self, state: OAuthState, issuer: str, client_ttl_seconds: int, unused_client_ttl_seconds: int
    ) -> None:
        self._state = state
        self._issuer = issuer
        self._ttl = client_ttl_seconds
        self._unused_ttl = min(unused_client_ttl_seconds, client_ttl_seconds)

    async def register(self, body: Any) -> dict[str, Any]:
        metadata = parse_metadata(body)
        client_id = "mhp_" + secrets.token_urlsafe(18)
        registration_token = secrets.token_urlsafe(32)
        secret = secrets.token_urlsafe(32) if metadata.token_endpoint_auth_method != "none" else ""
        client = build_client(client_id, metadata, registration_token, secret, issued_at=int(time.time()))
        await self._state.put_client(client, self._unused_ttl)
        view = client_view(client, self._issuer)
        view["registration_access_token"] = registration_token
        if secret:
            view["client_secret"] = secret
        return view

    async def read(self, client_id: str, authorization: str | None) -> dict[str, Any]:
        client = await self._authorised(client_id, authorization)
        return client_view(client, self._issuer)

    async def update(self, client_id: str, authorization: str | None, body: Any) -> dict[str, Any]:
        client = await self._authorised(client_id, authorization)
        if isinstance(body, dict):
            if body.get("client_id", client_id) != client_id:
                raise _invalid("client_id in the body must match the registration")
            sent_secret = body.get("client_secret")
            if sent_secret is not None and not (
                client.client_secret_sha256
                and constant_time_equal(token_sha256(str(sent_secret)), client.client_secret_sha256)
            ):
                raise _invalid("client_secret in the body does not match the registration")
        metadata = parse_metadata(body)
        # Changing between public and confidential would need a new secret; a fresh registration is simpler.
        if (metadata.token_endpoint_auth_method == "none") != (client.token_endpoint_auth_method == "none"):
            raise _invalid(
                "token_endpoint_auth_method cannot change between none and a secret; register anew"
            )
        updated = client.model_copy(
            update={
                "client_name": metadata.client_name,
                "redirect_uris": metadata.redirect_uris,
                "grant_types": metadata.grant_types,
                "response_types": metadata.response_types,
                "token_endpoint_auth_method": metadata.token_endpoint_auth_method,
                "scope": metadata.scope,
                "client_uri": metadata.client_uri,
                "logo_uri": metadata.logo_uri,
                "contacts": metadata.contacts,
                "software_id": metadata.software_id,
                "software_version": metadata.software_version,
            }
        )
        await self._state.put_client(updated, self._ttl)
        return client_view(updated, self._issuer)

    async def delete(self, client_id: str, authorization: str | None) -> None:
        await self._authorised(client_id, authorization)
        await self._state.delete_client(client_id)

    async def _authorised(self, client_id: str, authorization: str | None) -> OAuthClient:
        scheme, _, credentials = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise OAuthError(
                "invalid_token",
                "a registration access token is required",
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        client = await self._state.get_client(client_id, renew_ttl_seconds=self._ttl)
        # RFC 7592 §2: an unknown client and a wrong token look the same (401), so ids cannot be probed.
        if client is None or not constant_time_equal(
            token_sha256(credentials.strip()), client.registration_token_sha256
        ):
            raise OAuthError(
                "invalid_token",
                "the registration access token is not valid for this client",
                status=401,
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return client


def build_client(
    client_id: str,
    metadata: ClientMetadata,
    registration_token: str,
    secret: str,
    *,
    issued_at: int,
) -> OAuthClient:
    """The stored client; secrets only as hashes. No registration token (an admin-registered client): the
    RFC 7592 management endpoint answers 401 for it, since no token can match an empty hash."""
    return OAuthClient(
        client_id=client_id,
        client_secret_sha256=token_sha256(secret) if secret else "",
        registration_token_sha256=token_sha256(registration_token) if registration_token else "",
        client_name=metadata.client_name,
        redirect_uris=metadata.redirect_uris,
        grant_types=metadata.grant_types,
        response_types=metadata.response_types,
        token_endpoint_auth_method=metadata.token_endpoint_auth_method,  # type: ignore[arg-type]
        scope=metadata.scope,
        client_uri=metadata.client_uri,
        logo_uri=metadata.logo_uri,
        contacts=metadata.contacts,
        software_id=metadata.software_id,
        software_version=metadata.software_version,
        client_id_issued_at=issued_at,
    )
