"""Access tokens for the management API itself (what `mhp oauth login` obtains without --resource).

Such a token's audience is the issuer. `api_login` checks it like a data plane checks a resource token
(our signature, expiry, issuer, audience, revocation) and returns the GitHub login, or None. Turning that
login into an API Principal (which logins may use the API, and as which owner) is the caller's policy:
principal.authenticate consults this when a bearer credential is not an API token.
"""

from __future__ import annotations

import time

from .signing import SigningKeys
from .state_store import OAuthState


async def api_login(token: str, *, issuer: str, keys: SigningKeys, state: OAuthState) -> str | None:
    if token.count(".") != 2:
        return None
    claims = keys.verified_claims(token)
    if claims is None or claims.get("iss") != issuer:
        return None
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or exp <= time.time():
        return None
    audiences = claims.get("aud")
    audience_list = [audiences] if isinstance(audiences, str) else audiences
    if not isinstance(audience_list, list) or issuer not in audience_list:
        return None
    jti = claims.get("jti")
    if not isinstance(jti, str) or await state.is_jti_revoked(jti):
        return None
    login = claims.get("login")
    return login if isinstance(login, str) and login else None
