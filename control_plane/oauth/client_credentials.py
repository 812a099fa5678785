"""The client_credentials grant (RFC 6749 §4.4): a machine client (a confidential client the admin
pre-registered with this grant enabled) gets an access token for itself, with no user behind it.

The token names the client (`sub` = "client:<client_id>", `client_id`) and carries no `login`, so a data
plane admits it only through a proxy's `allowed_clients`, never through user or organisation rules. The
`resource` must name a protected resource (RFC 8707; implied only when there is exactly one), the scope is
what the client asks for (else what it registered, else `mcp`) limited to what the resources offer, and no
refresh token is issued (RFC 6749 §4.4.3): the client asks again with its secret.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from control_plane.records import OAuthClient, OAuthGrant, UserIdentity

from .errors import OAuthError
from .grant_types import CLIENT_CREDENTIALS
from .params import Params, scope_list
from .resource_indicators import ResourceCatalogue
from .token_issuance import TokenIssuer

MACHINE_SUBJECT_PREFIX = "client:"


class ClientCredentialsGrant:
    def __init__(self, issuer: TokenIssuer, catalogue: Callable[[], Awaitable[ResourceCatalogue]]) -> None:
        self._issuer = issuer
        self._catalogue = catalogue

    async def token(self, client: OAuthClient, params: Params) -> dict[str, Any]:
        if CLIENT_CREDENTIALS not in client.grant_types:
            raise OAuthError(
                "unauthorized_client",
                "this client may not use client_credentials (the admin enables it when pre-registering it)",
            )
        if client.token_endpoint_auth_method == "none":
            # Unreachable through the API (it refuses the combination); a hand-edited record must not pass.
            raise OAuthError("unauthorized_client", "client_credentials needs a client with a secret")
        catalogue = await self._catalogue()
        resources = catalogue.validate(params.all("resource"))
        supported = catalogue.scopes_supported
        requested = scope_list(params.get("scope")) or scope_list(client.scope) or ["mcp"]
        granted = [s for s in requested if s in supported]
        if not granted:
            raise OAuthError(
                "invalid_scope", f"none of the requested scopes are offered here ({' '.join(supported)})"
            )
        scope = " ".join(granted)
        grant = OAuthGrant(
            family_id=secrets.token_urlsafe(18),
            client_id=client.client_id,
            scope=scope,
            resources=resources,
            user=UserIdentity(sub=MACHINE_SUBJECT_PREFIX + client.client_id, login=""),
        )
        # Recorded like any grant, so revoking the access token (RFC 7009) works the same way.
        await self._issuer.start_grant(grant)
        return await self._issuer.issue(grant, audiences=resources, scope=scope, with_refresh=False)
