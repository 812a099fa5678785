"""The authorization server assembled from its parts, built once per app lifespan (kept on the Runtime).

Holds the one outbound HTTP client (to GitHub) and closes it on shutdown, and runs two background tasks: the
issuer's upkeep (auth-host proxy, signing-key ring created) and the signing-key ring follower. The server
needs the KEK (KEY_ENCRYPTION_KEY_B64): its signing keys and device codes are stored encrypted with it.
Without one (or with an invalid OAUTH_JWT_PRIVATE_KEY_B64 to import) the server still starts: metadata works,
and every endpoint that would mint or check a token answers 503 naming the setting to fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import httpx
import redis.asyncio as aioredis

from control_plane.records import OAuthClient
from shared.config import Settings
from shared.encryption import EncryptionError, KeyNotConfigured, Keyring

from ..audit.oauth_events import OAuthAudit
from ..audit.trails import AuditTrails
from ..services.auth_config import github_app_context, proxy_auth_collection
from ..services.hostname_claims import reserved_hostnames
from ..services.proxies import ProxyService
from ..store import Store
from .api_access import CLI_CLIENT_ID, api_login
from .auth_host import keep_issuer_reachable
from .authorization import AuthorizationEndpoint, AuthorizationSettings
from .client_auth import authenticate_client
from .client_credentials import ClientCredentialsGrant
from .client_metadata_documents import MetadataDocuments, is_metadata_document_client_id
from .consent import Consents
from .consents_page import ConsentsPage
from .cookies import CookieSigner
from .device_flow import DeviceFlow
from .errors import NotConfigured, OAuthError
from .github import GitHub, GitHubApp, GitHubEndpoints
from .grant_types import DEVICE_CODE, REFRESH_TOKEN
from .introspection import TokenStatus
from .key_ring import RETIREMENT_MARGIN_SECONDS, SigningKeyRing
from .metadata import authorization_server_metadata
from .oidc import OidcProvider, OidcSettings
from .params import Params
from .registration import Registrations
from .resource_indicators import ResourceCatalogue, load_catalogue
from .signing import SigningKeyError, decode_private_key_b64
from .state_store import OAuthState
from .token_endpoint import TokenEndpoint
from .token_issuance import Lifetimes, TokenIssuer
from .upstream import UpstreamIdentityProvider

log = logging.getLogger(__name__)

UPSTREAM_TIMEOUT_SECONDS = 15.0
NO_KEK = (
    "KEY_ENCRYPTION_KEY_B64 is not set: the authorization server stores its token-signing keys (and device "
    "codes) in Redis encrypted with it; generate one with "
    "`python -c 'from shared.encryption import new_key_b64; print(new_key_b64())'`"
)

# Pre-registered clients: the CLI logs in with the device flow as a public client.
BUILTIN_CLIENTS = {
    CLI_CLIENT_ID: OAuthClient(
        client_id=CLI_CLIENT_ID,
        client_name="mhp command line",
        redirect_uris=[],
        grant_types=[DEVICE_CODE, REFRESH_TOKEN],
        token_endpoint_auth_method="none",
    )
}


class _Configured:
    """The parts that need the KEK and the signing keys."""

    def __init__(self, server: OAuthServer, kek: Keyring, signing_keys: SigningKeyRing) -> None:
        s = server.settings
        self.signing_keys = signing_keys
        cookies = CookieSigner.from_keyring(kek)
        self.consents_page = ConsentsPage(server.issuer, server.consents, cookies)
        self.issuer = TokenIssuer(
            server.issuer,
            signing_keys,
            server.state,
            Lifetimes(s.OAUTH_ACCESS_TOKEN_TTL_SECONDS, s.OAUTH_REFRESH_TOKEN_TTL_SECONDS),
            reserved_hostnames(s),
        )
        self.authorization = AuthorizationEndpoint(
            AuthorizationSettings(
                issuer=server.issuer,
                code_ttl_seconds=s.OAUTH_CODE_TTL_SECONDS,
            ),
            server.state,
            server.upstream,
            cookies,
            server.catalogue,
            server.github_app,
            server.find_client,
            server.consents,
            kek,
            audit=server.audit,
        )
        self.device = DeviceFlow(
            server.issuer, server.state, server.upstream, self.issuer, server.catalogue, kek
        )
        self.tokens = TokenEndpoint(
            server.state,
            self.issuer,
            refresh_grace_seconds=s.OAUTH_REFRESH_GRACE_SECONDS,
            refresh_ttl_seconds=s.OAUTH_REFRESH_TOKEN_TTL_SECONDS,
            device_grant=self.device.token,
            client_credentials_grant=ClientCredentialsGrant(self.issuer, server.catalogue).token,
        )
        self.status = TokenStatus(
            server.state, signing_keys, s.OAUTH_REFRESH_TOKEN_TTL_SECONDS, s.OAUTH_REFRESH_GRACE_SECONDS
        )


class OAuthServer:
    def __init__(
        self, settings: Settings, redis: aioredis.Redis, store: Store, *, audit: OAuthAudit | None = None
    ) -> None:
        self.settings = settings
        # Sign-ins, consents, tokens and refusals (control_plane/audit/oauth_events.py).
        self.audit = audit if audit is not None else AuditTrails.build(settings, redis).oauth
        self.issuer = settings.oauth_issuer
        self.state = OAuthState(redis)
        self._reader = store.reader
        self.http = httpx.AsyncClient(timeout=UPSTREAM_TIMEOUT_SECONDS, follow_redirects=False)
        self.github = GitHub(
            GitHubEndpoints(
                client_id=settings.GITHUB_CLIENT_ID,
                client_secret=settings.GITHUB_CLIENT_SECRET,
                authorize_url=settings.GITHUB_AUTHORIZE_URL,
                token_url=settings.GITHUB_TOKEN_URL,
                device_code_url=settings.GITHUB_DEVICE_CODE_URL,
                api_url=settings.GITHUB_API_URL,
            ),
            self.http,
        )
        self.upstream: UpstreamIdentityProvider = self.github
        if settings.UPSTREAM_IDENTITY_PROVIDER == "oidc":
            self.upstream = OidcProvider(
                OidcSettings(
                    issuer=settings.OIDC_ISSUER,
                    client_id=settings.OIDC_CLIENT_ID,
                    client_secret=settings.OIDC_CLIENT_SECRET,
                    scopes=settings.OIDC_SCOPES,
                    login_claim=settings.OIDC_LOGIN_CLAIM,
                    groups_claim=settings.OIDC_GROUPS_CLAIM,
                ),
                self.http,
            )
        self.metadata_documents = MetadataDocuments(
            redis,
            self.http,
            allow_private_networks=settings.OAUTH_CIMD_ALLOW_PRIVATE_NETWORKS,
            audit=self.audit,
        )
        self.registrations = Registrations(
            self.state,
            self.issuer,
            settings.OAUTH_CLIENT_TTL_SECONDS,
            settings.OAUTH_UNUSED_CLIENT_TTL_SECONDS,
        )
        self.consents = Consents(self.state, settings.OAUTH_CONSENT_TTL_SECONDS, self.audit)
        self._configured: _Configured | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._config_error = ""
        try:
            kek = Keyring.from_settings(settings)
            imported = settings.OAUTH_JWT_PRIVATE_KEY_B64
            import_pem = decode_private_key_b64(imported, "OAUTH_JWT_PRIVATE_KEY_B64") if imported else None
            ring = SigningKeyRing(
                store,
                kek,
                import_pem=import_pem,
                default_retire_seconds=settings.OAUTH_ACCESS_TOKEN_TTL_SECONDS + RETIREMENT_MARGIN_SECONDS,
                refresh_seconds=settings.OAUTH_SIGNING_KEYS_REFRESH_SECONDS,
            )
            self._configured = _Configured(self, kek, ring)
        except KeyNotConfigured:
            self._config_error = NO_KEK
        except (EncryptionError, SigningKeyError) as exc:
            self._config_error = str(exc)
        if self._config_error:
            log.warning("OAuth authorization server disabled: %s", self._config_error)

    def start(self, proxies: ProxyService) -> None:
        """Background work (only when configured): the AUTH_HOST proxy and the signing-key ring in Redis,
        then following the ring (rotations by any replica, retirements)."""
        if self._configured is not None:
            ring = self._configured.signing_keys
            self._tasks = [
                asyncio.create_task(
                    keep_issuer_reachable(self.settings, proxies, ring.current), name="oauth-upkeep"
                ),
                asyncio.create_task(ring.run(), name="oauth-signing-keys"),
            ]

    async def aclose(self) -> None:
        if self._configured is not None:
            self._configured.signing_keys.stop()
        for task in self._tasks:
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.http.aclose()

    @property
    def ready(self) -> _Configured:
        if self._configured is None:
            raise NotConfigured(self._config_error)
        return self._configured

    async def catalogue(self) -> ResourceCatalogue:
        return await load_catalogue(
            self._reader, issuer=self.issuer, reserved_hosts=reserved_hostnames(self.settings)
        )

    async def github_app(self, hostname: str) -> GitHubApp | None:
        """A protected proxy's own GitHub app (secret decrypted), or None for the default app."""
        if not hostname:
            return None
        config = await self._reader.get(proxy_auth_collection(), hostname)
        if config is None or not config.github_client_id or not config.github_client_secret_encrypted:
            raise OAuthError(
                "temporarily_unavailable", f"the GitHub app of {hostname!r} is no longer configured"
            )
        try:
            secret = Keyring.from_settings(self.settings).decrypt(
                config.github_client_secret_encrypted, context=github_app_context(hostname)
            )
        except EncryptionError as exc:
            log.error("cannot decrypt the GitHub app secret of %s: %s", hostname, exc)
            raise OAuthError(
                "temporarily_unavailable", f"the GitHub app secret of {hostname!r} cannot be read", status=503
            ) from exc
        return GitHubApp(config.github_client_id, secret.decode("utf-8"))

    async def metadata(self) -> dict[str, Any]:
        return authorization_server_metadata(self.issuer, (await self.catalogue()).scopes_supported)

    async def jwks(self) -> dict[str, Any]:
        return dict((await self.ready.signing_keys.current()).jwks)

    async def api_login(self, token: str) -> str | None:
        """The GitHub login behind an access token issued for the management API, or None."""
        if self._configured is None:
            return None
        keys = await self._configured.signing_keys.current()
        return await api_login(token, issuer=self.issuer, keys=keys, state=self.state)

    async def find_client(self, client_id: str) -> OAuthClient | None:
        builtin = BUILTIN_CLIENTS.get(client_id)
        if builtin is not None:
            return builtin
        if is_metadata_document_client_id(client_id):
            return await self.metadata_documents.client(client_id)
        registered = await self.state.get_client(
            client_id, renew_ttl_seconds=self.settings.OAUTH_CLIENT_TTL_SECONDS
        )
        if registered is not None:
            return registered
        return await self.state.get_preregistered_client(client_id)

    async def client_of(self, params: Params, authorization: str | None) -> OAuthClient:
        return await authenticate_client(params, authorization, self.find_client)
