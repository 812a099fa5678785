"""Device authorization grant (RFC 8628) for CLI logins (`mhp oauth login`), backed by GitHub's device flow.

/device/code starts a GitHub device flow and hands the user GitHub's user_code and verification URI, with
our own device_code. GitHub's device code stays server-side, encrypted with the KEK (whoever reads it could
poll GitHub and receive the user's GitHub token once they approve); ours is stored only as its SHA-256.
/device/token (or /token with the device-code grant) polls GitHub; once the user approved there, we learn
who they are and issue our tokens. Without a `resource`, the token's audience is the issuer itself (meant
for the management API).

Only clients that registered the device-code grant may use it (the built-in `mhp-cli`; registration never
grants it): the device flow has no consent page of ours and no redirect URI, so any other client could
otherwise obtain a user's tokens by showing them GitHub's code page under our name. Checked when the flow
starts and again when it is polled.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from control_plane.records import DeviceLogin, OAuthClient, OAuthGrant
from shared.encryption import EncryptionError, Keyring
from shared.secrets import token_sha256

from .errors import OAuthError
from .grant_types import DEVICE_CODE, REFRESH_TOKEN
from .params import Params, scope_list
from .resource_indicators import ResourceCatalogue
from .state_store import OAuthState
from .token_issuance import TokenIssuer
from .upstream import UpstreamIdentityProvider

log = logging.getLogger(__name__)

DEFAULT_DEVICE_TTL_SECONDS = 900


def device_login_context(device_code_sha256: str) -> str:
    """Binds the encrypted upstream code to its login: a ciphertext moved to another one fails."""
    return f"oauth-device-login:{device_code_sha256}"


class DeviceFlow:
    def __init__(
        self,
        issuer_url: str,
        state: OAuthState,
        upstream: UpstreamIdentityProvider,
        issuer: TokenIssuer,
        catalogue: Callable[[], Awaitable[ResourceCatalogue]],
        kek: Keyring,
    ) -> None:
        self._kek = kek
        self._issuer_url = issuer_url
        self._state = state
        self._upstream = upstream
        self._tokens = issuer
        self._catalogue = catalogue

    async def start(self, client: OAuthClient, params: Params) -> dict[str, Any]:
        _require_device_grant(client)
        catalogue = await self._catalogue()
        requested = params.all("resource")
        resources = catalogue.validate(requested) if requested else [self._issuer_url]
        scopes = [s for s in scope_list(params.get("scope")) if s in catalogue.scopes_supported] or ["mcp"]
        upstream = await self._upstream.start_device_flow()
        device_code = secrets.token_urlsafe(32)
        digest = token_sha256(device_code)
        ttl = int(upstream.get("expires_in") or DEFAULT_DEVICE_TTL_SECONDS)
        interval = int(upstream.get("interval") or 5)
        sealed = self._kek.encrypt(
            str(upstream["device_code"]).encode(), context=device_login_context(digest)
        )
        await self._state.put_device_login(
            digest,
            DeviceLogin(
                upstream_device_code_encrypted=sealed,
                client_id=client.client_id,
                scope=" ".join(scopes),
                resources=resources,
                interval_seconds=interval,
            ),
            ttl,
        )
        return {
            "device_code": device_code,
            "user_code": upstream["user_code"],
            "verification_uri": upstream["verification_uri"],
            "expires_in": ttl,
            "interval": interval,
        }

    async def token(self, client: OAuthClient, params: Params) -> dict[str, Any]:
        grant_type = params.get("grant_type", DEVICE_CODE)
        if grant_type != DEVICE_CODE:
            raise OAuthError("unsupported_grant_type", f"expected grant_type={DEVICE_CODE}")
        _require_device_grant(client)
        digest = token_sha256(params.require("device_code"))
        login = await self._state.get_device_login(digest)
        if login is None or login.client_id != client.client_id:
            raise OAuthError("expired_token", "the device code is unknown or has expired")
        try:
            upstream_code = self._kek.decrypt(
                login.upstream_device_code_encrypted, context=device_login_context(digest)
            ).decode()
        except (EncryptionError, UnicodeDecodeError) as exc:
            # Moved from another login, or sealed under a KEK no longer configured: the user starts again.
            log.error("device login %s cannot be read: %s", digest[:12], exc)
            raise OAuthError("expired_token", "the device code is unknown or has expired") from exc
        upstream_token = await self._upstream.poll_device_flow(upstream_code)
        # Single use: only the poll that deletes the login issues tokens.
        if not await self._state.delete_device_login(digest):
            raise OAuthError("expired_token", "the device code was already used")
        user = await self._upstream.identity(upstream_token)
        grant = OAuthGrant(
            family_id=secrets.token_urlsafe(18),
            client_id=client.client_id,
            scope=login.scope,
            resources=login.resources,
            user=user,
        )
        await self._tokens.start_grant(grant)
        return await self._tokens.issue(
            grant,
            audiences=login.resources,
            scope=login.scope,
            with_refresh=REFRESH_TOKEN in client.grant_types,
        )


def _require_device_grant(client: OAuthClient) -> None:
    if DEVICE_CODE not in client.grant_types:
        raise OAuthError(
            "unauthorized_client", "this client did not register the device-code grant (RFC 8628)"
        )
