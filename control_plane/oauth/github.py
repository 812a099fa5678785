"""The upstream identity provider: GitHub's OAuth web flow (with PKCE), device flow and user API.

Endpoints come from settings (GITHUB_AUTHORIZE_URL, GITHUB_TOKEN_URL, GITHUB_DEVICE_CODE_URL,
GITHUB_API_URL) so tests point them at a local server speaking the same protocol. GitHub's token is used
only here, to learn who signed in; it is never stored and never reaches a protected resource.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx

from control_plane.records import UserIdentity

from .errors import OAuthError

log = logging.getLogger(__name__)

UPSTREAM_SCOPES = "user:email read:org"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


class UpstreamError(OAuthError):
    """GitHub refused or could not be reached; `error` follows RFC 6749 where GitHub gave one."""

    def __init__(self, error: str, description: str, status: int = 502) -> None:
        super().__init__(error, description, status=status)


@dataclass(frozen=True, slots=True)
class GitHubApp:
    """A GitHub OAuth app's credentials: the default one from settings, or a proxy's own."""

    client_id: str
    client_secret: str


@dataclass(frozen=True, slots=True)
class GitHubEndpoints:
    client_id: str
    client_secret: str
    authorize_url: str
    token_url: str
    device_code_url: str
    api_url: str


class GitHub:
    def __init__(self, endpoints: GitHubEndpoints, http: httpx.AsyncClient) -> None:
        self._ep = endpoints
        self._http = http

    def _app(self, app: GitHubApp | None) -> GitHubApp:
        if app is not None:
            return app
        if not self._ep.client_id:
            raise OAuthError(
                "temporarily_unavailable",
                "GITHUB_CLIENT_ID is not set: GitHub login is not configured",
                status=503,
            )
        return GitHubApp(self._ep.client_id, self._ep.client_secret)

    async def authorize_url(
        self, *, redirect_uri: str, state: str, code_challenge: str, app: GitHubApp | None = None
    ) -> str:
        query = urlencode(
            {
                "client_id": self._app(app).client_id,
                "redirect_uri": redirect_uri,
                "state": state,
                "scope": UPSTREAM_SCOPES,
                "code_challenge": code_challenge,
                "code_challenge_method": "S256",
                "allow_signup": "false",
            }
        )
        return f"{self._ep.authorize_url}?{query}"

    async def _post_form(self, url: str, data: dict[str, str]) -> dict[str, Any]:
        try:
            response = await self._http.post(url, data=data, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise UpstreamError(
                "temporarily_unavailable", f"GitHub is unreachable ({type(exc).__name__})"
            ) from exc
        try:
            body = response.json()
        except ValueError as exc:
            raise UpstreamError(
                "server_error", f"GitHub answered {response.status_code} without JSON"
            ) from exc
        if not isinstance(body, dict):
            raise UpstreamError("server_error", "GitHub answered with an unexpected JSON shape")
        return body

    async def exchange_code(
        self, *, code: str, redirect_uri: str, code_verifier: str, app: GitHubApp | None = None
    ) -> str:
        credentials = self._app(app)
        body = await self._post_form(
            self._ep.token_url,
            {
                "client_id": credentials.client_id,
                "client_secret": credentials.client_secret,
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": code_verifier,
            },
        )
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise UpstreamError(
                "access_denied", f"GitHub refused the login: {body.get('error', 'no token')}", 400
            )
        return token

    async def start_device_flow(self) -> dict[str, Any]:
        body = await self._post_form(
            self._ep.device_code_url, {"client_id": self._app(None).client_id, "scope": UPSTREAM_SCOPES}
        )
        for field in ("device_code", "user_code", "verification_uri"):
            if not isinstance(body.get(field), str):
                raise UpstreamError(
                    "server_error", f"GitHub's device-code answer lacks {field}: {body.get('error')}"
                )
        return body

    async def poll_device_flow(self, device_code: str) -> str:
        """GitHub's access token once the user approved; raises OAuthError(authorization_pending, ...)."""
        body = await self._post_form(
            self._ep.token_url,
            {"client_id": self._ep.client_id, "device_code": device_code, "grant_type": DEVICE_GRANT},
        )
        token = body.get("access_token")
        if isinstance(token, str) and token:
            return token
        error = str(body.get("error", "server_error"))
        if error in ("authorization_pending", "slow_down", "expired_token", "access_denied"):
            raise OAuthError(error, str(body.get("error_description", error)))
        raise UpstreamError("server_error", f"GitHub device flow failed: {error}")

    async def _api(self, token: str, path: str) -> Any:
        try:
            response = await self._http.get(
                f"{self._ep.api_url.rstrip('/')}{path}",
                headers={"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json"},
            )
        except httpx.HTTPError as exc:
            raise UpstreamError(
                "temporarily_unavailable", f"GitHub API unreachable ({type(exc).__name__})"
            ) from exc
        if response.status_code != 200:
            raise UpstreamError("server_error", f"GitHub API {path} answered {response.status_code}")
        try:
            return response.json()
        except ValueError as exc:
            raise UpstreamError("server_error", f"GitHub API {path} answered without JSON") from exc

    async def identity(self, token: str) -> UserIdentity:
        user = await self._api(token, "/user")
        if not isinstance(user, dict) or not isinstance(user.get("login"), str) or "id" not in user:
            raise UpstreamError("server_error", "GitHub /user answered an unexpected shape")
        orgs: list[str] = []
        try:
            listing = await self._api(token, "/user/orgs")
            orgs = [str(o["login"]).lower() for o in listing if isinstance(o, dict) and "login" in o]
        except UpstreamError as exc:
            # Without read:org the org allowlist cannot admit this user; user allowlists still work.
            log.warning("could not list GitHub orgs of %s: %s", user["login"], exc.description)
        email = user.get("email") or ""
        if not email:
            try:
                emails = await self._api(token, "/user/emails")
                primary = [
                    e for e in emails if isinstance(e, dict) and e.get("primary") and e.get("verified")
                ]
                email = str(primary[0]["email"]) if primary else ""
            except (UpstreamError, KeyError):
                email = ""
        return UserIdentity(
            sub=f"github:{user['id']}",
            login=str(user["login"]).lower(),
            name=str(user.get("name") or ""),
            email=str(email),
            orgs=orgs,
        )
