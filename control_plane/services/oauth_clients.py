"""Pre-registered OAuth clients: the admin registers a client ahead of time (a web app, a partner's MCP
client, an internal tool) instead of relying on Dynamic Client Registration.

They follow the same metadata rules as DCR (redirect URIs: exact https or loopback; grant types
authorization_code and refresh_token; auth method none, client_secret_basic or client_secret_post), get a
client id with the `mhp_pre_` prefix and, for confidential clients, a secret shown once and stored as its
SHA-256. Unlike DCR registrations they never expire and have no RFC 7592 registration token: only the admin
manages them, through `/api/v1/oauth/clients/`. A confidential one may also be allowed the
client_credentials grant (a machine client; see oauth/client_credentials.py), which DCR never grants.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from control_plane.records import OAuthClient

from ..errors import InvalidInput, NotFound
from ..oauth.errors import OAuthError
from ..oauth.grant_types import CLIENT_CREDENTIALS
from ..oauth.registration import build_client, parse_metadata
from ..oauth.state_store import OAuthState
from ..principal import Principal

CLIENT_ID_PREFIX = "mhp_pre_"


class OAuthClientCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    client_name: str = Field(min_length=1, max_length=200, description="Shown on the consent page")
    redirect_uris: list[str] = Field(
        min_length=1, description="Exact redirect URIs: https, or http on loopback (any port)"
    )
    token_endpoint_auth_method: Literal["none", "client_secret_basic", "client_secret_post"] = Field(
        default="client_secret_basic", description="`none` for a public client (PKCE only, no secret)"
    )
    scope: str = Field(default="", max_length=1000)
    client_uri: str = Field(default="", max_length=2000)
    allow_client_credentials: bool = Field(
        default=False,
        description="also allow the client_credentials grant (a machine client with no user; needs a secret)",
    )


class OAuthClientView(BaseModel):
    client_id: str
    client_name: str
    redirect_uris: list[str]
    grant_types: list[str]
    token_endpoint_auth_method: str
    scope: str
    client_uri: str
    client_id_issued_at: int

    @classmethod
    def of(cls, client: OAuthClient) -> OAuthClientView:
        return cls.model_validate(client.model_dump(include=set(cls.model_fields)))


class OAuthClientCreated(OAuthClientView):
    client_secret: str | None = Field(
        default=None, description="Shown once (confidential clients only); only its SHA-256 is stored"
    )


class PreRegisteredClients:
    def __init__(self, state: OAuthState) -> None:
        self._state = state

    async def create(self, principal: Principal, body: OAuthClientCreate) -> OAuthClientCreated:
        principal.require_admin("register OAuth clients")
        if body.allow_client_credentials and body.token_endpoint_auth_method == "none":
            raise InvalidInput(
                "allow_client_credentials needs a confidential client (a secret), not auth method none"
            )
        metadata_input: dict[str, Any] = {
            **body.model_dump(exclude={"allow_client_credentials"}),
            "grant_types": ["authorization_code", "refresh_token"],
        }
        try:
            metadata = parse_metadata(metadata_input)
        except OAuthError as exc:
            raise InvalidInput(exc.description) from exc
        client_id = CLIENT_ID_PREFIX + secrets.token_urlsafe(18)
        secret = secrets.token_urlsafe(32) if metadata.token_endpoint_auth_method != "none" else ""
        client = build_client(client_id, metadata, "", secret, issued_at=int(time.time()))
        if body.allow_client_credentials:
            client = client.model_copy(update={"grant_types": [*client.grant_types, CLIENT_CREDENTIALS]})
        await self._state.put_preregistered_client(client)
        return OAuthClientCreated(**OAuthClientView.of(client).model_dump(), client_secret=secret or None)

    async def list(self, principal: Principal) -> list[OAuthClientView]:
        principal.require_admin("list pre-registered OAuth clients")
        return [OAuthClientView.of(c) for c in await self._state.list_preregistered_clients()]

    async def get(self, principal: Principal, client_id: str) -> OAuthClient:
        """The stored record (what its ETag is computed from); answer with `OAuthClientView.of` it."""
        principal.require_admin("read pre-registered OAuth clients")
        client = await self._state.get_preregistered_client(client_id)
        if client is None:
            raise NotFound(f"pre-registered OAuth client {client_id!r} not found")
        return client

    async def delete(self, principal: Principal, client_id: str, if_match: str | None = None) -> None:
        """Delete the client (with `if_match`: only while its ETag matches, else 412); tokens already issued
        to it stay valid until they expire (revoke them to end sessions at once), and new authorizations
        and refreshes are refused."""
        principal.require_admin("delete pre-registered OAuth clients")
        if not await self._state.delete_preregistered_client(client_id, if_match):
            raise NotFound(f"pre-registered OAuth client {client_id!r} not found")
