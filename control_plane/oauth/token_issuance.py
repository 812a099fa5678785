"""Minting tokens for a grant: a signed JWT access token and an opaque, hashed, rotating refresh token.

Access-token claims: iss, sub, aud (the resource URI, or a list of them), exp, iat, nbf, jti, scope,
client_id, login (the GitHub login), orgs and email (for per-proxy allowlists); a client_credentials token
has no login, orgs or email. Every jti is recorded
under its grant so revoking the grant revokes the access tokens it issued.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from control_plane.records import OAuthGrant, RefreshRecord
from shared.secrets import token_sha256

from .api_access import CLI_CLIENT_ID
from .errors import OAuthError
from .key_ring import SigningKeyRing
from .resource_indicators import authorization_server_refusal
from .state_store import OAuthState

REFRESH_TOKEN_PREFIX = "mhr_"


@dataclass(frozen=True, slots=True)
class Lifetimes:
    access_seconds: int
    refresh_seconds: int


class TokenIssuer:
    def __init__(
        self,
        issuer: str,
        keys: SigningKeyRing,
        state: OAuthState,
        lifetimes: Lifetimes,
        reserved_hosts: frozenset[str] = frozenset(),
    ) -> None:
        self._issuer = issuer
        self._keys = keys
        self._state = state
        self._lifetimes = lifetimes
        self._reserved_hosts = reserved_hosts

    async def issue(
        self, grant: OAuthGrant, *, audiences: list[str], scope: str, with_refresh: bool
    ) -> dict[str, Any]:
        # Every grant passes here: a token whose audience is the authorization server is a management
        # credential, minted only for the built-in CLI client (api_access.py), whatever a stored code or grant
        # says (one from before this check existed, say).
        if grant.client_id != CLI_CLIENT_ID:
            for audience in audiences:
                refusal = authorization_server_refusal(audience, self._issuer, self._reserved_hosts)
                if refusal is not None:
                    raise OAuthError("invalid_target", refusal)
        now = int(time.time())
        jti = secrets.token_urlsafe(18)
        exp = now + self._lifetimes.access_seconds
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "sub": grant.user.sub,
            "aud": audiences[0] if len(audiences) == 1 else audiences,
            "exp": exp,
            "iat": now,
            "nbf": now,
            "jti": jti,
            "scope": scope,
            "client_id": grant.client_id,
        }
        if grant.user.login:  # absent for a machine client (client_credentials): no user, no allowlists
            claims["login"] = grant.user.login
            claims["orgs"] = grant.user.orgs
        if grant.user.email:
            claims["email"] = grant.user.email
        access_token = (await self._keys.current(for_signing=True)).sign(claims)
        await self._state.add_grant_jti(grant.family_id, jti, exp, self._lifetimes.refresh_seconds)
        body: dict[str, Any] = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": self._lifetimes.access_seconds,
            "scope": scope,
        }
        if with_refresh:
            refresh = REFRESH_TOKEN_PREFIX + secrets.token_urlsafe(32)
            record = RefreshRecord(family_id=grant.family_id, client_id=grant.client_id)
            await self._state.put_refresh(token_sha256(refresh), record, self._lifetimes.refresh_seconds)
            await self._state.extend_grant(grant.family_id, self._lifetimes.refresh_seconds)
            body["refresh_token"] = refresh
        return body

    async def start_grant(self, grant: OAuthGrant) -> None:
        await self._state.put_grant(grant, self._lifetimes.refresh_seconds)
