"""Token introspection (RFC 7662) and revocation (RFC 7009).

Introspection answers `{"active": false}` for anything unknown, expired, revoked, not ours or issued to
another client than the caller (the admin token may introspect any), and never says why. Revocation
always answers 200 (RFC 7009 §2.2): revoking a refresh token ends its whole grant (access tokens
included); revoking an access token revokes its jti. A client can revoke only its own tokens.
"""

from __future__ import annotations

import time
from typing import Any

from control_plane.records import OAuthClient
from shared.secrets import token_sha256

from .key_ring import SigningKeyRing
from .params import Params
from .state_store import OAuthState
from .token_issuance import REFRESH_TOKEN_PREFIX

ACCESS_CLAIMS = ("iss", "sub", "aud", "exp", "iat", "nbf", "jti", "scope", "client_id")


class TokenStatus:
    def __init__(
        self, state: OAuthState, keys: SigningKeyRing, refresh_ttl_seconds: int, grace_seconds: int
    ) -> None:
        self._state = state
        self._keys = keys
        self._refresh_ttl = refresh_ttl_seconds
        self._grace = grace_seconds

    async def _access_claims(self, token: str) -> dict[str, Any] | None:
        claims = (await self._keys.current()).verified_claims(token)
        if claims is None:
            return None
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp <= time.time():
            return None
        if await self._state.is_jti_revoked(str(claims.get("jti", ""))):
            return None
        return claims

    async def introspect(self, params: Params, caller_client_id: str | None) -> dict[str, Any]:
        """`caller_client_id` None = the admin (any token); a client learns only about its own tokens, so
        the endpoint cannot be used to scan for other clients' tokens."""
        token = params.require("token")
        if not token.startswith(REFRESH_TOKEN_PREFIX):
            claims = await self._access_claims(token)
            if claims is None or caller_client_id not in (None, claims.get("client_id")):
                return {"active": False}
            out = {name: claims[name] for name in ACCESS_CLAIMS if name in claims}
            out.update(active=True, token_type="Bearer", username=claims.get("login", ""))
            return out
        record = await self._state.get_refresh(token_sha256(token))
        if record is None or (
            record.rotated_at is not None and time.time() - record.rotated_at > self._grace
        ):
            return {"active": False}
        grant = await self._state.get_grant(record.family_id)
        if grant is None or caller_client_id not in (None, grant.client_id):
            return {"active": False}
        return {
            "active": True,
            "token_type": "refresh_token",
            "scope": grant.scope,
            "client_id": grant.client_id,
            "username": grant.user.login,
            "sub": grant.user.sub,
            "aud": grant.resources,
            "iat": int(record.issued_at),
            "exp": int(record.issued_at) + self._refresh_ttl,
        }

    async def revoke(self, client: OAuthClient, params: Params) -> None:
        token = params.require("token")
        if token.startswith(REFRESH_TOKEN_PREFIX):
            record = await self._state.get_refresh(token_sha256(token))
            if record is not None and record.client_id == client.client_id:
                await self._state.revoke_family(record.family_id)
            return
        claims = (await self._keys.current()).verified_claims(token)
        if claims is None or claims.get("client_id") != client.client_id:
            return
        jti = claims.get("jti")
        exp = claims.get("exp")
        if isinstance(jti, str) and isinstance(exp, int):
            await self._state.revoke_jtis({jti: exp})
