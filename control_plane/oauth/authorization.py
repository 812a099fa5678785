"""The authorization endpoint (RFC 6749 §4.1 as profiled by OAuth 2.1), our consent step, and the
callback from the upstream login.

    GET  /authorize          validate; a remembered consent covering this client, scope set and resource
                             set + a session -> code now; else the consent page (see consent.py)
    POST /authorize/consent  CSRF-checked approve/deny; approve -> GitHub or OIDC (state + PKCE)
    GET  /callback           single-use state bound to this browser -> upstream identity -> our code

Until client_id and redirect_uri are known good, errors are a safe HTML page (PageError); after that they
are redirected to the client (RedirectError) with `state` and `iss` (RFC 9207). Codes are single-use, bound
to client, redirect URI, PKCE challenge and resources, and live OAUTH_CODE_TTL_SECONDS. Our state at the
upstream provider is stored under its hash, with our PKCE verifier encrypted with the KEK: someone who can
read Redis must not be able to finish a user's sign-in with a code intercepted on the way back.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode

from control_plane.records import (
    AuthorizationCode,
    AuthorizationRequest,
    OAuthClient,
    UpstreamLogin,
    UserIdentity,
)
from shared.encryption import EncryptionError, Keyring
from shared.secrets import constant_time_equal, token_sha256

from ..audit.oauth_events import OAuthAudit
from . import pkce
from .consent import Consents
from .consent_page import consent_page
from .cookies import CONSENT_COOKIE, FLOW_COOKIE, SESSION_COOKIE, CookieSigner, clear_cookie, session_user
from .errors import OAuthError, PageError, RedirectError
from .github import GitHubApp
from .grant_types import AUTHORIZATION_CODE
from .params import Params, scope_list
from .redirect_uris import matches
from .resource_indicators import ResourceCatalogue
from .state_store import OAuthState
from .upstream import UpstreamIdentityProvider

REQUEST_TTL_SECONDS = 600


def upstream_login_context(state_sha256: str) -> str:
    return f"oauth-upstream-login:{state_sha256}"


SESSION_TTL_SECONDS = 8 * 3600
MAX_STATE_LENGTH = 2000


@dataclass(frozen=True, slots=True)
class Page:
    status: int
    html: str
    cookies: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Redirect:
    location: str
    cookies: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class AuthorizationSettings:
    issuer: str
    code_ttl_seconds: int


def redirect_to_client(redirect_uri: str, values: dict[str, str | None]) -> str:
    query = urlencode({k: v for k, v in values.items() if v is not None})
    return f"{redirect_uri}{'&' if '?' in redirect_uri else '?'}{query}"


class AuthorizationEndpoint:
    def __init__(
        self,
        settings: AuthorizationSettings,
        state: OAuthState,
        upstream: UpstreamIdentityProvider,
        signer: CookieSigner,
        catalogue: Callable[[], Awaitable[ResourceCatalogue]],
        github_app: Callable[[str], Awaitable[GitHubApp | None]],
        find_client: Callable[[str], Awaitable[OAuthClient | None]],
        consents: Consents,
        kek: Keyring,
        *,
        audit: OAuthAudit,
    ) -> None:
        self._audit = audit
        self._kek = kek
        self._find_client = find_client
        self._consents = consents
        self._settings = settings
        self._state = state
        self._upstream = upstream
        self._signer = signer
        self._catalogue = catalogue
        self._github_app = github_app

    def error_redirect(self, exc: RedirectError) -> Redirect:
        return Redirect(
            redirect_to_client(
                exc.redirect_uri,
                {
                    "error": exc.error,
                    "error_description": exc.description,
                    "state": exc.state,
                    "iss": self._settings.issuer,
                },
            )
        )

    async def authorize(self, params: Params, cookies: dict[str, str]) -> Page | Redirect:
        client_id = params.get("client_id")
        if not client_id:
            raise PageError("Invalid request", "The request names no client (client_id is missing).")
        try:
            client = await self._find_client(client_id)
        except OAuthError as exc:
            raise PageError("Unknown application", exc.description) from exc
        if client is None:
            raise PageError("Unknown application", "This application is not registered with this server.")
        redirect_uri = params.get("redirect_uri")
        if redirect_uri is None:
            if len(client.redirect_uris) != 1:
                raise PageError("Invalid request", "redirect_uri is required for this application.")
            redirect_uri = client.redirect_uris[0]
        elif not matches(client.redirect_uris, redirect_uri):
            # Never redirect to a URI the client did not register (open redirect).
            raise PageError("Invalid redirect", "The redirect URI is not registered for this application.")
        state = params.get("state")
        if state is not None and len(state) > MAX_STATE_LENGTH:
            raise PageError("Invalid request", "The state parameter is too long.")

        def fail(error: str, description: str) -> RedirectError:
            return RedirectError(error, description, redirect_uri=redirect_uri, state=state)

        if params.get("response_type") != "code":
            raise fail("unsupported_response_type", "only response_type=code is supported")
        if AUTHORIZATION_CODE not in client.grant_types or "code" not in client.response_types:
            raise fail("unauthorized_client", "this client did not register the authorization_code grant")
        challenge = params.get("code_challenge")
        if challenge is None:
            raise fail(
                "invalid_request", "PKCE is required: send code_challenge with code_challenge_method=S256"
            )
        if params.get("code_challenge_method") != "S256":
            raise fail("invalid_request", "only code_challenge_method=S256 is supported (plain is refused)")
        if not pkce.challenge_is_valid(challenge):
            raise fail("invalid_request", "code_challenge must be a base64url SHA-256 (43 characters)")
        catalogue = await self._catalogue()
        try:
            resources = catalogue.validate(params.all("resource"))
            upstream_app_hostname = catalogue.upstream_app_hostname(resources)
        except OAuthError as exc:
            raise fail(exc.error, exc.description) from exc
        supported = catalogue.scopes_supported
        requested = scope_list(params.get("scope")) or scope_list(client.scope) or ["mcp"]
        granted = [s for s in requested if s in supported]
        if not granted:
            raise fail(
                "invalid_scope", f"none of the requested scopes are offered here ({' '.join(supported)})"
            )

        request = AuthorizationRequest(
            request_id=secrets.token_urlsafe(24),
            client_id=client.client_id,
            client_name=client.client_name,
            redirect_uri=redirect_uri,
            state=state,
            scope=" ".join(granted),
            resources=resources,
            code_challenge=challenge,
            csrf_token=secrets.token_urlsafe(24),
            upstream_app_hostname=upstream_app_hostname,
        )

        # OIDC `prompt`: "consent" / "login" always show our page; "none" must not show any page.
        prompt = set(scope_list(params.get("prompt")))
        user = session_user(self._signer, cookies) if not prompt & {"consent", "login"} else None
        if user is not None and await self._consents.covers(user.login, client.client_id, granted, resources):
            return await self._issue_code(request, user)
        if "none" in prompt:
            raise fail(
                "consent_required" if user is not None else "login_required", "user interaction is required"
            )

        await self._state.put_authorization_request(request, REQUEST_TTL_SECONDS)
        html = consent_page(
            action=f"{self._settings.issuer}/authorize/consent",
            client_name=client.client_name,
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            scopes=granted,
            resources=resources,
            request_id=request.request_id,
            csrf_token=request.csrf_token,
        )
        cookie = self._signer.set_cookie(
            CONSENT_COOKIE, {"r": request.request_id, "c": request.csrf_token}, REQUEST_TTL_SECONDS
        )
        return Page(200, html, [cookie])

    async def consent(self, form: Params, cookies: dict[str, str]) -> Redirect:
        request_id = form.get("request_id", "")
        csrf = form.get("csrf_token", "")
        bound = self._signer.decode(CONSENT_COOKIE, cookies.get(CONSENT_COOKIE))
        request = await self._state.get_authorization_request(request_id) if request_id else None
        if (
            bound is None
            or request is None
            or not constant_time_equal(str(bound.get("r", "")), request_id)
            or not constant_time_equal(str(bound.get("c", "")), csrf)
            or not constant_time_equal(request.csrf_token, csrf)
        ):
            raise PageError(
                "Request could not be verified",
                "This approval did not come from the page we showed in this browser, or it expired.",
                status=403,
            )
        decision = form.get("decision")
        if decision != "approve":
            await self._state.take_authorization_request(request_id)
            await self._audit.record(
                "consent_denied",
                "failure",
                reason="access_denied: the user denied the request",
                client_id=request.client_id,
                resources=request.resources,
                scope=request.scope,
            )
            return Redirect(
                redirect_to_client(
                    request.redirect_uri,
                    {
                        "error": "access_denied",
                        "error_description": "the user denied the request",
                        "state": request.state,
                        "iss": self._settings.issuer,
                    },
                ),
                [clear_cookie(CONSENT_COOKIE)],
            )
        upstream_state = secrets.token_urlsafe(32)
        verifier = pkce.new_verifier()
        callback = f"{self._settings.issuer}/callback"
        try:
            app = await self._github_app(request.upstream_app_hostname)
            location = await self._upstream.authorize_url(
                redirect_uri=callback, state=upstream_state, code_challenge=pkce.s256(verifier), app=app
            )
        except OAuthError as exc:
            raise PageError("Sign-in is not available", exc.description, status=exc.status) from exc
        state_sha256 = token_sha256(upstream_state)
        await self._state.put_upstream_login(
            state_sha256,
            UpstreamLogin(
                request_id=request_id,
                code_verifier_encrypted=self._kek.encrypt(
                    verifier.encode(), context=upstream_login_context(state_sha256)
                ),
                redirect_uri=callback,
                upstream_app_hostname=request.upstream_app_hostname,
            ),
            REQUEST_TTL_SECONDS,
        )
        flow = self._signer.set_cookie(FLOW_COOKIE, {"s": state_sha256}, REQUEST_TTL_SECONDS)
        return Redirect(location, [clear_cookie(CONSENT_COOKIE), flow])

    async def callback(self, params: Params, cookies: dict[str, str]) -> Redirect:
        upstream_state = params.get("state")
        if not upstream_state:
            raise PageError("Invalid sign-in response", "The sign-in response carries no state.")
        bound = self._signer.decode(FLOW_COOKIE, cookies.get(FLOW_COOKIE))
        state_sha256 = token_sha256(upstream_state)
        if bound is None or not constant_time_equal(str(bound.get("s", "")), state_sha256):
            # Login CSRF: a callback URL started in another browser must not sign this one in.
            raise PageError(
                "Sign-in could not be verified", "This sign-in was not started in this browser.", status=403
            )
        login = await self._state.take_upstream_login(state_sha256)
        if login is None:
            raise PageError("Sign-in expired", "This sign-in link was already used or has expired.")
        try:
            verifier = self._kek.decrypt(
                login.code_verifier_encrypted, context=upstream_login_context(state_sha256)
            ).decode()
        except (EncryptionError, UnicodeDecodeError) as exc:
            raise PageError("Sign-in expired", "This sign-in cannot be completed; start again.") from exc
        request = await self._state.take_authorization_request(login.request_id)
        if request is None:
            raise PageError(
                "Sign-in expired", "The authorization request has expired; start again from the app."
            )
        code = params.get("code")
        if params.get("error") or not code:
            upstream_error = (params.get("error") or "no code")[:100]
            await self._audit.record(
                "sign_in",
                "failure",
                reason=f"access_denied: the identity provider sign-in was not completed ({upstream_error})",
                client_id=request.client_id,
                resources=request.resources,
                scope=request.scope,
            )
            return Redirect(
                redirect_to_client(
                    request.redirect_uri,
                    {
                        "error": "access_denied",
                        "error_description": "sign-in at the identity provider was not completed",
                        "state": request.state,
                        "iss": self._settings.issuer,
                    },
                ),
                [clear_cookie(FLOW_COOKIE)],
            )
        try:
            upstream_token = await self._upstream.exchange_code(
                code=code,
                redirect_uri=login.redirect_uri,
                code_verifier=verifier,
                app=await self._github_app(login.upstream_app_hostname),
            )
            user = await self._upstream.identity(upstream_token)
        except OAuthError as exc:
            await self._audit.record(
                "sign_in",
                "failure",
                reason=f"{exc.error}: {exc.description}",
                client_id=request.client_id,
                resources=request.resources,
                scope=request.scope,
            )
            return self.error_redirect(
                RedirectError(
                    "access_denied" if exc.status < 500 else "temporarily_unavailable",
                    exc.description,
                    redirect_uri=request.redirect_uri,
                    state=request.state,
                )
            )
        await self._audit.record(
            "sign_in",
            "success",
            login=user.login,
            client_id=request.client_id,
            resources=request.resources,
            scope=request.scope,
        )
        # What the user approved on our page: this client, these scopes, these resources (not more).
        await self._consents.remember(
            user.login, request.client_id, request.client_name, scope_list(request.scope), request.resources
        )
        result = await self._issue_code(request, user)
        session = self._signer.set_cookie(SESSION_COOKIE, {"user": user.model_dump()}, SESSION_TTL_SECONDS)
        return Redirect(result.location, [clear_cookie(FLOW_COOKIE), session])

    async def _issue_code(self, request: AuthorizationRequest, user: UserIdentity) -> Redirect:
        code = secrets.token_urlsafe(32)
        await self._state.put_code(
            token_sha256(code),
            AuthorizationCode(
                client_id=request.client_id,
                redirect_uri=request.redirect_uri,
                code_challenge=request.code_challenge,
                scope=request.scope,
                resources=request.resources,
                user=user,
            ),
            self._settings.code_ttl_seconds,
        )
        return Redirect(
            redirect_to_client(
                request.redirect_uri, {"code": code, "state": request.state, "iss": self._settings.issuer}
            )
        )
