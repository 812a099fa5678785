"""The token endpoint (RFC 6749 §3.2): authorization_code (with PKCE, RFC 7636), refresh_token (rotation
with a grace window and family revocation on reuse), the device-code grant (delegated to device_flow) and
client_credentials for admin-enabled machine clients (delegated to client_credentials).

- A code is consumed atomically; a second redemption revokes the grant the first one created.
- A refresh token is rotated on every use. Presenting an already-rotated token within
  OAUTH_REFRESH_GRACE_SECONDS (a client retrying a lost response) gets a fresh pair in the same family;
  later, it is treated as theft and the whole family (refresh and access tokens) is revoked.
- `resource` on the token request may only narrow what the grant was bound to (RFC 8707 §2.2), and
  `scope` on a refresh may only narrow the grant's scope.
- Each grant only for a client that registered it (`grant_types`), like /authorize and the device flow.
- Validate, then consume: a request that fails a check (another client, a wrong PKCE verifier, a wider
  scope or resource) leaves the code or refresh token as it was. Consuming first would let anyone holding
  a stolen code burn it, and would turn a client's next, valid refresh into "reuse" that revokes its grant.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from control_plane.records import AuthorizationCode, OAuthClient, OAuthGrant, RefreshRecord
from shared.models import canonical_resource_uri
from shared.secrets import token_sha256

from . import pkce
from .errors import OAuthError
from .grant_types import AUTHORIZATION_CODE, CLIENT_CREDENTIALS, DEVICE_CODE, REFRESH_TOKEN
from .params import Params, scope_list
from .state_store import OAuthState
from .token_issuance import TokenIssuer

log = logging.getLogger(__name__)

# A grant handled elsewhere (device_flow, client_credentials): the authenticated client and the request.
DeviceGrant = Callable[[OAuthClient, Params], Awaitable[dict[str, Any]]]


def narrowed_resources(requested: list[str], bound: list[str]) -> list[str]:
    if not requested:
        return list(bound)
    out: list[str] = []
    for value in requested:
        try:
            canonical = canonical_resource_uri(value)
        except ValueError as exc:
            raise OAuthError("invalid_target", f"resource {value!r}: {exc}") from exc
        if canonical not in bound:
            raise OAuthError("invalid_target", f"{canonical!r} was not granted to this authorization")
        out.append(canonical)
    return out


class TokenEndpoint:
    def __init__(
        self,
        state: OAuthState,
        issuer: TokenIssuer,
        *,
        refresh_grace_seconds: int,
        refresh_ttl_seconds: int,
        device_grant: DeviceGrant,
        client_credentials_grant: DeviceGrant,
    ) -> None:
        self._state = state
        self._issuer = issuer
        self._grace = refresh_grace_seconds
        self._refresh_ttl = refresh_ttl_seconds
        self._device_grant = device_grant
        self._client_credentials_grant = client_credentials_grant

    async def handle(self, client: OAuthClient, params: Params) -> dict[str, Any]:
        grant_type = params.require("grant_type")
        if grant_type == AUTHORIZATION_CODE:
            return await self._authorization_code(client, params)
        if grant_type == REFRESH_TOKEN:
            return await self._refresh(client, params)
        if grant_type == DEVICE_CODE:
            return await self._device_grant(client, params)
        if grant_type == CLIENT_CREDENTIALS:
            return await self._client_credentials_grant(client, params)
        raise OAuthError("unsupported_grant_type", f"grant_type {grant_type!r} is not supported")

    async def _authorization_code(self, client: OAuthClient, params: Params) -> dict[str, Any]:
        if AUTHORIZATION_CODE not in client.grant_types:
            raise OAuthError(
                "unauthorized_client", "this client did not register the authorization_code grant"
            )
        code = params.require("code")
        verifier = params.get("code_verifier")
        if verifier is None:
            raise OAuthError("invalid_request", "code_verifier is required (PKCE)")
        digest = token_sha256(code)
        pending = await self._state.get_code(digest)
        if pending is not None:
            _check_code(pending, client, params, verifier)
        family_id = secrets.token_urlsafe(18)
        redemption = await self._state.redeem_code(digest, family_id, self._refresh_ttl)
        if redemption.outcome == "replayed":
            revoked = await self._state.revoke_family(redemption.replayed_family)
            log.warning(
                "authorization code replayed by client %s: revoked its grant (%d access tokens)",
                client.client_id,
                len(revoked),
            )
            raise OAuthError(
                "invalid_grant", "the authorization code was already used; tokens issued with it are revoked"
            )
        if redemption.code is None:
            raise OAuthError("invalid_grant", "the authorization code is invalid or expired")
        issued = redemption.code
        audiences = _check_code(issued, client, params, verifier)
        grant = OAuthGrant(
            family_id=family_id,
            client_id=client.client_id,
            scope=issued.scope,
            resources=issued.resources,
            user=issued.user,
        )
        await self._issuer.start_grant(grant)
        return await self._issuer.issue(
            grant, audiences=audiences, scope=issued.scope, with_refresh=REFRESH_TOKEN in client.grant_types
        )

    async def _refresh(self, client: OAuthClient, params: Params) -> dict[str, Any]:
        if REFRESH_TOKEN not in client.grant_types:
            raise OAuthError("unauthorized_client", "this client did not register the refresh_token grant")
        presented = params.require("refresh_token")
        digest = token_sha256(presented)
        record = await self._state.get_refresh(digest)
        if record is None or record.client_id != client.client_id:
            raise OAuthError("invalid_grant", "the refresh token is invalid, expired or revoked")
        grant = await self._state.get_grant(record.family_id)
        if grant is None:
            raise OAuthError("invalid_grant", "the refresh token was revoked")
        now = time.time()
        if record.rotated_at is not None and now - record.rotated_at > self._grace:
            await self._state.revoke_family(record.family_id)
            log.warning(
                "refresh token reused %.0f s after rotation (client %s, user %s): revoked the whole grant",
                now - record.rotated_at,
                client.client_id,
                grant.user.login,
            )
            raise OAuthError(
                "invalid_grant", "the refresh token was already used; every token of this grant is revoked"
            )
        scopes = scope_list(params.get("scope")) or scope_list(grant.scope)
        if not set(scopes) <= set(scope_list(grant.scope)):
            raise OAuthError("invalid_scope", "a refresh may not widen the scope of the grant")
        audiences = narrowed_resources(params.all("resource"), grant.resources)
        if record.rotated_at is None:
            # Only a request that passed every check rotates the token. A concurrent request may have
            # rotated it a moment ago; that is the retry case, still in grace.
            await self._state.mark_rotated(
                digest, RefreshRecord(**{**record.model_dump(), "rotated_at": now})
            )
        return await self._issuer.issue(grant, audiences=audiences, scope=" ".join(scopes), with_refresh=True)


def _check_code(issued: AuthorizationCode, client: OAuthClient, params: Params, verifier: str) -> list[str]:
    """What a code redemption must match; returns the token's audiences (the resources, maybe narrowed)."""
    if issued.client_id != client.client_id:
        raise OAuthError("invalid_grant", "the authorization code was issued to another client")
    redirect_uri = params.get("redirect_uri")
    if redirect_uri is not None and redirect_uri != issued.redirect_uri:
        raise OAuthError("invalid_grant", "redirect_uri does not match the authorization request")
    if redirect_uri is None and client.redirect_uris != [issued.redirect_uri]:
        raise OAuthError("invalid_request", "redirect_uri is required")
    if not pkce.verifier_matches(verifier, issued.code_challenge):
        raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
    return narrowed_resources(params.all("resource"), issued.resources)
