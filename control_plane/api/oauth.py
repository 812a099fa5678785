"""HTTP boundary of the OAuth authorization server: routes at the issuer's root and the one place where
OAuth errors become responses (RFC 6749 JSON, a redirect to the client, or a safe HTML page).

Thin: parse the request (query, form or JSON), call control_plane.oauth, shape the response. Token
responses carry `Cache-Control: no-store` (RFC 6749 §5.1).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from shared.secrets import constant_time_equal

from ..audit import client_requests, token_requests
from ..oauth.authorization import Page, Redirect
from ..oauth.consent_page import SECURITY_HEADERS, error_page
from ..oauth.cors import OAuthCors
from ..oauth.errors import OAuthError, PageError, RedirectError
from ..oauth.grant_types import DEVICE_CODE
from ..oauth.metadata import issuer_path, well_known_paths
from ..oauth.params import Params, parse_form, parse_query
from ..oauth.registration import MAX_REGISTRATION_BYTES
from ..oauth.server import OAuthServer
from . import oauth_openapi
from .deps import RuntimeDep

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _server(runtime: Any) -> OAuthServer:
    server: OAuthServer = runtime.oauth
    return server


async def _form(request: Request) -> Params:
    return parse_form(await request.body(), request.headers.get("content-type", ""))


def _query(request: Request) -> Params:
    return parse_query(request.query_params.multi_items())


async def _browser_params(request: Request, title: str) -> Params:
    """The query (GET) or form (POST) of a browser-facing endpoint; unreadable ones are an HTML error page,
    since nothing is known yet that a redirect to the client could be trusted with."""
    try:
        return _query(request) if request.method == "GET" else await _form(request)
    except OAuthError as exc:
        raise PageError(title, exc.description) from exc


async def _counted_form(request: Request, grant_type: str) -> Params:
    """The token-side form; one that cannot be read is counted as a refused grant of `grant_type`."""
    try:
        return await _form(request)
    except OAuthError as exc:
        request.app.state.metrics.count_grant(grant_type, exc.error)
        raise


async def _json(request: Request) -> Any:
    body = await request.body()
    if len(body) > MAX_REGISTRATION_BYTES:
        raise OAuthError("invalid_client_metadata", "the registration request is too large")
    try:
        return json.loads(body or b"null")
    except ValueError as exc:
        raise OAuthError("invalid_client_metadata", "the request body is not valid JSON") from exc


def _respond(outcome: Page | Redirect) -> Response:
    response: Response
    if isinstance(outcome, Page):
        response = HTMLResponse(outcome.html, status_code=outcome.status, headers=SECURITY_HEADERS)
    else:
        response = RedirectResponse(outcome.location, status_code=302, headers={"Cache-Control": "no-store"})
    for cookie in outcome.cookies:
        response.headers.append("set-cookie", cookie)
    return response


def build_router() -> APIRouter:
    router = APIRouter(tags=["oauth"])

    async def metadata(runtime: RuntimeDep) -> JSONResponse:
        return JSONResponse(await _server(runtime).metadata())

    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        router.add_api_route(
            path, metadata, methods=["GET"], summary="Authorization server metadata (RFC 8414)"
        )

    @router.get("/jwks.json", summary="Token-signing public keys (RFC 7517)")
    async def jwks(runtime: RuntimeDep) -> JSONResponse:
        return JSONResponse(await _server(runtime).jwks(), headers={"Cache-Control": "public, max-age=300"})

    @router.post(
        "/register",
        status_code=201,
        summary="Dynamic client registration (RFC 7591)",
        openapi_extra=oauth_openapi.REGISTRATION,
    )
    async def register(request: Request, runtime: RuntimeDep) -> JSONResponse:
        server = _server(runtime)
        try:
            view = await server.registrations.register(await _json(request))
        except OAuthError as exc:
            await client_requests.registration_refused(server.audit, client_requests.CLIENT_REGISTERED, exc)
            raise
        await client_requests.registration_answered(server.audit, client_requests.CLIENT_REGISTERED, view, "")
        return JSONResponse(view, status_code=201, headers=NO_STORE)

    @router.get("/register/{client_id}", summary="Read a registration (RFC 7592)")
    async def read_registration(client_id: str, request: Request, runtime: RuntimeDep) -> JSONResponse:
        view = await _server(runtime).registrations.read(client_id, request.headers.get("authorization"))
        return JSONResponse(view, headers=NO_STORE)

    @router.put(
        "/register/{client_id}",
        summary="Replace a registration (RFC 7592)",
        openapi_extra=oauth_openapi.REGISTRATION,
    )
    async def update_registration(client_id: str, request: Request, runtime: RuntimeDep) -> JSONResponse:
        server = _server(runtime)
        event = client_requests.CLIENT_UPDATED
        try:
            view = await server.registrations.update(
                client_id, request.headers.get("authorization"), await _json(request)
            )
        except OAuthError as exc:
            await client_requests.registration_refused(server.audit, event, exc, client_id)
            raise
        await client_requests.registration_answered(server.audit, event, view, client_id)
        return JSONResponse(view, headers=NO_STORE)

    @router.delete("/register/{client_id}", status_code=204, summary="Delete a registration (RFC 7592)")
    async def delete_registration(client_id: str, request: Request, runtime: RuntimeDep) -> Response:
        server = _server(runtime)
        event = client_requests.CLIENT_DELETED
        try:
            await server.registrations.delete(client_id, request.headers.get("authorization"))
        except OAuthError as exc:
            await client_requests.registration_refused(server.audit, event, exc, client_id)
            raise
        await client_requests.registration_answered(server.audit, event, None, client_id)
        return Response(status_code=204)

    @router.get(
        "/authorize",
        summary="Authorization endpoint (code + PKCE S256)",
        openapi_extra=oauth_openapi.AUTHORIZE,
    )
    async def authorize(request: Request, runtime: RuntimeDep) -> Response:
        params = await _browser_params(request, "Invalid request")
        server = _server(runtime)
        try:
            return _respond(await server.ready.authorization.authorize(params, dict(request.cookies)))
        except RedirectError as exc:
            await token_requests.authorization_refused(server.audit, params, exc.error, exc.description)
            raise
        except PageError as exc:
            await token_requests.authorization_refused(
                server.audit, params, "invalid_request", exc.description
            )
            raise

    @router.post(
        "/authorize/consent",
        summary="Consent decision (form post from our consent page)",
        openapi_extra=oauth_openapi.CONSENT,
    )
    async def consent(request: Request, runtime: RuntimeDep) -> Response:
        form = await _browser_params(request, "Invalid request")
        return _respond(await _server(runtime).ready.authorization.consent(form, dict(request.cookies)))

    @router.get(
        "/callback",
        summary="Return from the upstream identity provider (GitHub)",
        openapi_extra=oauth_openapi.CALLBACK,
    )
    async def callback(request: Request, runtime: RuntimeDep) -> Response:
        params = await _browser_params(request, "Invalid sign-in response")
        return _respond(await _server(runtime).ready.authorization.callback(params, dict(request.cookies)))

    @router.get("/consents", summary="The signed-in user's remembered consents (HTML)")
    async def consents(request: Request, runtime: RuntimeDep) -> Response:
        return _respond(await _server(runtime).ready.consents_page.show(dict(request.cookies)))

    @router.post(
        "/consents/revoke",
        summary="Revoke one of the signed-in user's consents (form post)",
        openapi_extra=oauth_openapi.CONSENT_REVOKE,
    )
    async def revoke_consent(request: Request, runtime: RuntimeDep) -> Response:
        form = await _browser_params(request, "Invalid request")
        return _respond(await _server(runtime).ready.consents_page.revoke(form, dict(request.cookies)))

    @router.post("/token", summary="Token endpoint", openapi_extra=oauth_openapi.TOKEN)
    async def token(request: Request, runtime: RuntimeDep) -> JSONResponse:
        server = _server(runtime)
        ready = server.ready
        params = await _counted_form(request, "unknown")  # a form we cannot read counts under "unknown"
        authorization = request.headers.get("authorization")
        grant_type = "unknown"  # until the client is authenticated: a refused client counts under it
        try:
            client = await server.client_of(params, authorization)
            grant_type = params.get("grant_type", "")
            answer = await ready.tokens.handle(client, params)
        except OAuthError as exc:
            request.app.state.metrics.count_grant(grant_type, exc.error)
            await token_requests.token_refused(
                server.audit, params, exc, token_requests.claimed_client_id(params, authorization)
            )
            raise
        request.app.state.metrics.count_grant(grant_type, "issued")
        catalogue = await server.catalogue() if grant_type != "refresh_token" else None
        await token_requests.token_answered(server.audit, params, client.client_id, answer, catalogue)
        return JSONResponse(answer, headers=NO_STORE)

    @router.post(
        "/introspect", summary="Token introspection (RFC 7662)", openapi_extra=oauth_openapi.INTROSPECT
    )
    async def introspect(request: Request, runtime: RuntimeDep) -> JSONResponse:
        server = _server(runtime)
        ready = server.ready
        params = await _form(request)
        authorization = request.headers.get("authorization") or ""
        scheme, _, credentials = authorization.partition(" ")
        admin = runtime.settings.ADMIN_TOKEN
        caller: str | None = None  # None: the admin, who may introspect any token
        try:
            if not (scheme.lower() == "bearer" and admin and constant_time_equal(credentials.strip(), admin)):
                caller = (await server.client_of(params, authorization or None)).client_id
            answer = await ready.status.introspect(params, caller)
        except OAuthError as exc:
            claimed = caller or token_requests.claimed_client_id(params, authorization)
            await token_requests.token_introspected(server.audit, claimed, None, exc)
            raise
        await token_requests.token_introspected(server.audit, caller or "", answer, None)
        return JSONResponse(answer, headers=NO_STORE)

    @router.post("/revoke", summary="Token revocation (RFC 7009)", openapi_extra=oauth_openapi.REVOKE)
    async def revoke(request: Request, runtime: RuntimeDep) -> JSONResponse:
        server = _server(runtime)
        ready = server.ready
        params = await _form(request)
        authorization = request.headers.get("authorization")
        try:
            client = await server.client_of(params, authorization)
            await ready.status.revoke(client, params)
        except OAuthError as exc:
            claimed = token_requests.claimed_client_id(params, authorization)
            await token_requests.token_revoked(server.audit, params, claimed, exc)
            raise
        await token_requests.token_revoked(server.audit, params, client.client_id, None)
        return JSONResponse({}, headers=NO_STORE)

    @router.post(
        "/device/code",
        summary="Start a device login (RFC 8628; GitHub only, not OIDC)",
        openapi_extra=oauth_openapi.DEVICE_CODE,
    )
    async def device_code(request: Request, runtime: RuntimeDep) -> JSONResponse:
        server = _server(runtime)
        ready = server.ready
        params = await _form(request)
        authorization = request.headers.get("authorization")
        try:
            client = await server.client_of(params, authorization)
            answer = await ready.device.start(client, params)
        except OAuthError as exc:
            claimed = token_requests.claimed_client_id(params, authorization)
            await token_requests.device_started(server.audit, params, claimed, exc)
            raise
        await token_requests.device_started(server.audit, params, client.client_id, None)
        return JSONResponse(answer, headers=NO_STORE)

    @router.post("/device/token", summary="Poll a device login", openapi_extra=oauth_openapi.DEVICE_TOKEN)
    async def device_token(request: Request, runtime: RuntimeDep) -> JSONResponse:
        server = _server(runtime)
        ready = server.ready
        params = await _counted_form(request, DEVICE_CODE)
        authorization = request.headers.get("authorization")
        try:
            client = await server.client_of(params, authorization)
            answer = await ready.device.token(client, params)
        except OAuthError as exc:
            request.app.state.metrics.count_grant(DEVICE_CODE, exc.error)
            claimed = token_requests.claimed_client_id(params, authorization)
            await token_requests.token_refused(server.audit, params, exc, claimed, device=True)
            raise
        request.app.state.metrics.count_grant(DEVICE_CODE, "issued")
        await token_requests.token_answered(
            server.audit, params, client.client_id, answer, await server.catalogue()
        )
        return JSONResponse(answer, headers=NO_STORE)

    return router


async def _oauth_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OAuthError)
    return JSONResponse(exc.body(), status_code=exc.status, headers={**NO_STORE, **exc.headers})


async def _page_error(_request: Request, exc: Exception) -> HTMLResponse:
    assert isinstance(exc, PageError)
    return HTMLResponse(
        error_page(exc.title, exc.description), status_code=exc.status, headers=SECURITY_HEADERS
    )


async def _redirect_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RedirectError)
    server = _server(request.app.state.runtime)
    return _respond(server.ready.authorization.error_redirect(exc))


def install(app: FastAPI, issuer: str) -> None:
    """Mount the AS at the root (and under the issuer's path, if it has one), with its error handlers."""
    router = build_router()
    app.include_router(router)
    prefix = issuer_path(issuer)
    if prefix:
        app.include_router(router, prefix=prefix)
        for path in well_known_paths(issuer):
            if path.startswith("/.well-known/") and path.count("/") > 2:
                app.add_api_route(path, router.routes[0].endpoint, methods=["GET"], include_in_schema=False)  # type: ignore[attr-defined]
    app.add_exception_handler(OAuthError, _oauth_error)
    app.add_exception_handler(PageError, _page_error)
    app.add_exception_handler(RedirectError, _redirect_error)
    app.add_middleware(OAuthCors, issuer_path=prefix)
