"""A generic OpenID Connect provider as the upstream identity provider (UPSTREAM_IDENTITY_PROVIDER=oidc), in
place of GitHub: Keycloak, Google, Okta, Entra ID, Authentik, Dex...

The provider is found through its discovery document (`OIDC_ISSUER/.well-known/openid-configuration`, read
on first use and kept; its `issuer` must equal OIDC_ISSUER). The web flow is the authorization-code flow
with PKCE (S256) and the client secret (HTTP Basic, or in the form when the provider only supports
client_secret_post). Who signed in comes from the userinfo endpoint with the provider's access token, which
is then dropped (it never reaches a protected resource):

- `sub` becomes "oidc:<sub>";
- the login is the OIDC_LOGIN_CLAIM claim (default `preferred_username`, else `email` when
  `email_verified` is true), lower-cased; it is what `allowed_users` and ADMIN_GITHUB_USERS match, so the
  claim must be one users cannot choose freely at the provider;
- the OIDC_GROUPS_CLAIM claim (default `groups`, a list) plays the part of GitHub organisations
  (`allowed_orgs`).

Not offered with OIDC: per-proxy GitHub apps and the device flow of `mhp oauth login` (both answer with a
clear error).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from control_plane.records import UserIdentity

from .errors import OAuthError
from .github import GitHubApp, UpstreamError

log = logging.getLogger(__name__)

DISCOVERY_PATH = "/.well-known/openid-configuration"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
NO_DEVICE_FLOW = "device login (mhp oauth login) needs the GitHub identity provider; use an API token instead"


@dataclass(frozen=True, slots=True)
class OidcSettings:
    issuer: str
    client_id: str
    client_secret: str
    scopes: str
    login_claim: str
    groups_claim: str


@dataclass(frozen=True, slots=True)
class _Endpoints:
    authorization: str
    token: str
    userinfo: str
    basic_auth: bool


class OidcProvider:
    def __init__(self, settings: OidcSettings, http: httpx.AsyncClient) -> None:
        self._settings = settings
        self._http = http
        self._endpoints: _Endpoints | None = None
        self._lock = asyncio.Lock()

    async def _discover(self) -> _Endpoints:
        if self._endpoints is not None:
            return self._endpoints
        async with self._lock:
            if self._endpoints is None:
                self._endpoints = await self._fetch_discovery()
        return self._endpoints

    async def _fetch_discovery(self) -> _Endpoints:
        s = self._settings
        if not s.issuer or not s.client_id:
            raise OAuthError(
                "temporarily_unavailable",
                "OIDC_ISSUER and OIDC_CLIENT_ID must be set: OpenID Connect login is not configured",
                status=503,
            )
        issuer = s.issuer.rstrip("/")
        _require_secure(issuer, "OIDC_ISSUER")
        document = await self._json("GET", issuer + DISCOVERY_PATH, what="the discovery document")
        if str(document.get("issuer", "")).rstrip("/") != issuer:
            raise UpstreamError(
                "server_error",
                f"the discovery document names issuer {document.get('issuer')!r}, not {issuer!r}",
            )
        endpoints: dict[str, str] = {}
        for field in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint"):
            value = document.get(field)
            if not isinstance(value, str) or not value.startswith(("https://", "http://")):
                raise UpstreamError("server_error", f"the provider's discovery document lacks {field}")
            _require_secure(value, field)
            endpoints[field] = value
        methods = document.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        return _Endpoints(
            authorization=endpoints["authorization_endpoint"],
            token=endpoints["token_endpoint"],
            userinfo=endpoints["userinfo_endpoint"],
            basic_auth="client_secret_basic" in methods,
        )

    async def _json(
        self, method: str, url: str, *, what: str, bearer: str | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if bearer is not None:
            headers["Authorization"] = f"Bearer {bearer}"
        try:
            response = await self._http.request(method, url, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise UpstreamError(
                "temporarily_unavailable", f"the identity provider is unreachable ({type(exc).__name__})"
            ) from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise UpstreamError(
                "server_error", f"{what} answered {response.status_code} without a JSON object"
            )
        if response.status_code != 200:
            error = body.get("error_description") or body.get("error") or response.status_code
            raise UpstreamError("access_denied", f"{what} refused: {error}", 400)
        return body

    @staticmethod
    def _refuse_app(app: GitHubApp | None) -> None:
        if app is not None:
            raise OAuthError(
                "temporarily_unavailable",
                "this resource has its own GitHub app, but the upstream identity provider is OIDC",
                status=503,
            )

    async def authorize_url(
        self, *, redirect_uri: str, state: str, code_challenge: str, app: GitHubApp | None = None
    ) -> str:
        self._refuse_app(app)
        endpoints = await self._discover()
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self._settings.client_id,
                "redirect_uri": redirect_uri,
                "scope": self._settings.scopes,
                "state": state,
                "code_challenge": code_challenge,
                "code_challenge_method": "S256",
            }
        )
        separator = "&" if "?" in endpoints.authorization else "?"
        return f"{endpoints.authorization}{separator}{query}"

    async def exchange_code(
        self, *, code: str, redirect_uri: str, code_verifier: str, app: GitHubApp | None = None
    ) -> str:
        self._refuse_app(app)
        endpoints = await self._discover()
        s = self._settings
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
        }
        auth: tuple[str, str] | None = None
        if endpoints.basic_auth:
            auth = (s.client_id, s.client_secret)
        else:
            form.update(client_id=s.client_id, client_secret=s.client_secret)
        body = await self._json("POST", endpoints.token, what="the token endpoint", data=form, auth=auth)
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise UpstreamError("access_denied", "the identity provider returned no access token", 400)
        return token

    async def identity(self, token: str) -> UserIdentity:
        endpoints = await self._discover()
        claims = await self._json("GET", endpoints.userinfo, what="the userinfo endpoint", bearer=token)
        return identity_from_claims(claims, self._settings)

    async def start_device_flow(self) -> dict[str, Any]:
        raise OAuthError("unsupported_grant_type", NO_DEVICE_FLOW)

    async def poll_device_flow(self, device_code: str) -> str:
        raise OAuthError("unsupported_grant_type", NO_DEVICE_FLOW)


def _require_secure(url: str, name: str) -> None:
    """Codes, secrets and tokens cross these URLs: https only, except on loopback (a local provider)."""
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS):
        return
    raise UpstreamError("server_error", f"{name} must be an https URL (or http on loopback): {url!r}")


def identity_from_claims(claims: dict[str, Any], settings: OidcSettings) -> UserIdentity:
    """The signed-in user from userinfo claims; refuses a response without a subject or a login."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise UpstreamError("server_error", "the userinfo answer has no subject")
    login = claims.get(settings.login_claim)
    if not login and claims.get("email_verified") is True:
        # Only a verified address may stand in for the login: allowlists and admin rights hang on it.
        login = claims.get("email")
    if not isinstance(login, str) or not login.strip():
        raise UpstreamError(
            "access_denied",
            f"the identity provider sent no {settings.login_claim!r} claim or verified email for this user",
            400,
        )
    groups = claims.get(settings.groups_claim, [])
    if isinstance(groups, str):
        groups = [groups]
    if not isinstance(groups, list):
        groups = []
    return UserIdentity(
        sub=f"oidc:{subject}",
        login=login.strip().lower(),
        name=str(claims.get("name") or ""),
        email=str(claims.get("email") or ""),
        orgs=[str(g).lower() for g in groups if isinstance(g, str | int)],
    )
