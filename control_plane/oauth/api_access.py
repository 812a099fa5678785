"""Access tokens for the management API itself (what `mhp oauth login` obtains without --resource).

Such a token's audience is the issuer and it was issued to the built-in CLI client. `api_login` checks it
like a data plane checks a resource token (our signature, expiry, issuer, audience, revocation) and returns
the GitHub login, or None. The client check matters as much as the audience: a token any other client
holds (a self-registered MCP client, a metadata-document client) is never a management credential, even if
its audience were the issuer, because such a client's consent screen never said "manage this proxy".
Turning the login into an API Principal (which logins may use the API, and as which owner) is the caller's
policy: principal.authenticate consults this when a bearer credential is not an API token.
"""

from __future__ import annotations

import time

from .signing import SigningKeys
from .state_store import OAuthState

# The built-in public client of `mhp oauth login` (device flow); the only client whose tokens the
# management API accepts.
CLI_CLIENT_ID = "mhp-cli"


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
    if claims.get("client_id") != CLI_CLIENT_ID:
        return None
    jti = claims.get("jti")
    if not isinstance(jti, str) or await state.is_jti_revoked(jti):
        return None
    login = claims.get("login")
    return login if isinstance(login, str) and login else None
