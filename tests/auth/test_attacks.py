"""Attacks on the authorization server, each refused the way the specs say: no PKCE / plain PKCE, code
replay (revokes what the code issued), redirect mismatch and open redirects, state reuse, consent CSRF,
login CSRF, unknown client (401 invalid_client), refresh-token reuse (revokes the family), wrong resource,
and reflected XSS through the pages we render."""

from __future__ import annotations

import json
from urllib.parse import quote

import httpx
import pytest
import redis.asyncio as aioredis

from shared import keys
from shared.secrets import token_sha256
from tests.control_plane.conftest import ADMIN, RunningControlPlane

from .conftest import RESOURCE, protect
from .github_fake import GitHubFake
from .oauth_flow import (
    REDIRECT_URI,
    Browser,
    authorize_url,
    consent_fields,
    login,
    query_of,
    redeem,
    refresh,
    register,
)

pytestmark = pytest.mark.auth


async def _introspect(http: httpx.AsyncClient, token: str) -> bool:
    response = await http.post("/introspect", data={"token": token}, headers=ADMIN)
    assert response.status_code == 200
    active: bool = response.json()["active"]
    return active


async def test_pkce_is_mandatory_and_s256_only(http: httpx.AsyncClient, cp: RunningControlPlane) -> None:
    await protect(http)
    client = await register(http)
    browser = Browser(http)
    # No code_challenge at all.
    url = authorize_url(
        client, verifier="x" * 43, resource=RESOURCE, code_challenge="", code_challenge_method=""
    )
    response = await browser.get(url)
    assert response.status_code == 302
    redirect = query_of(response.headers["location"])
    assert redirect["error"] == "invalid_request" and "PKCE" in redirect["error_description"]
    assert redirect["state"] == "st-123" and redirect["iss"] == cp.url
    # plain
    url = authorize_url(
        client, verifier="x" * 43, resource=RESOURCE, code_challenge="x" * 43, code_challenge_method="plain"
    )
    redirect = query_of((await browser.get(url)).headers["location"])
    assert redirect["error"] == "invalid_request" and "S256" in redirect["error_description"]


async def test_wrong_code_verifier_and_missing_verifier(
    http: httpx.AsyncClient, cp: RunningControlPlane
) -> None:
    await protect(http)
    client = await register(http)
    result = await login(Browser(http), client, resource=RESOURCE)
    response = await http.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": result.code,
            "redirect_uri": REDIRECT_URI,
            "client_id": client.client_id,
        },
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
    response = await redeem(http, client, result, code_verifier="W" * 50)
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


async def test_code_replay_fails_and_revokes_what_it_issued(
    http: httpx.AsyncClient, cp: RunningControlPlane
) -> None:
    await protect(http)
    client = await register(http)
    result = await login(Browser(http), client, resource=RESOURCE)
    first = await redeem(http, client, result)
    assert first.status_code == 200
    tokens = first.json()
    assert await _introspect(http, tokens["access_token"])
    replay = await redeem(http, client, result)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert not await _introspect(http, tokens["access_token"])
    assert not await _introspect(http, tokens["refresh_token"])
    assert (await refresh(http, client, tokens["refresh_token"])).status_code == 400


async def test_code_is_bound_to_its_client(http: httpx.AsyncClient, cp: RunningControlPlane) -> None:
    await protect(http)
    client = await register(http)
    thief = await register(http, name="thief")
    result = await login(Browser(http), client, resource=RESOURCE)
    response = await redeem(http, thief, result)
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


async def test_redirect_uri_mismatch_is_never_followed(
    http: httpx.AsyncClient, cp: RunningControlPlane
) -> None:
    await protect(http)
    client = await register(http)
    browser = Browser(http)
    for evil in (
        "https://evil.example/callback",
        "http://127.0.0.1:38999/callback/../evil",
        "http://127.0.0.1:38999/callbackx",
        "http://evil.example@127.0.0.1:38999/callback",
        "http://127.0.0.1:38999/callback?x=1",
        "//evil.example/callback",
    ):
        response = await browser.get(
            authorize_url(client, verifier="v" * 43, resource=RESOURCE, redirect_uri=evil)
        )
        assert response.status_code == 400, evil
        assert "location" not in response.headers
        assert response.headers["content-type"].startswith("text/html")
        assert "not registered" in response.text
    # Loopback: any port is accepted (RFC 8252), the path must still match exactly.
    result = await login(browser, client, resource=RESOURCE, redirect_uri="http://127.0.0.1:41234/callback")
    assert result.code
    # The token request must repeat the same redirect URI.
    response = await redeem(http, client, result)
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


async def test_unknown_client_at_authorize_gets_a_page_not_a_redirect(
    http: httpx.AsyncClient, cp: RunningControlPlane
) -> None:
    response = await http.get(
        "/authorize?response_type=code&client_id=nope&redirect_uri=https%3A%2F%2Fevil.example%2F&state=s"
    )
    assert response.status_code == 400 and "location" not in response.headers
    assert response.headers["content-security-policy"].count("frame-ancestors 'none'") == 1


async def test_unknown_client_at_token_endpoint_is_401(
    http: httpx.AsyncClient, cp: RunningControlPlane
) -> None:
    response = await http.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": "x",
            "client_id": "nope",
            "code_verifier": "v" * 43,
        },
    )
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    response = await http.post(
        "/token", data={"grant_type": "authorization_code", "code": "x"}, auth=("nope", "pw")
    )
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    response = await http.post("/token", data={"grant_type": "authorization_code", "code": "x"})
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"


async def test_refresh_reuse_revokes_the_family(http: httpx.AsyncClient, cp: RunningControlPlane) -> None:
    # This control plane runs with OAUTH_REFRESH_GRACE_SECONDS=0: any reuse is theft.
    await protect(http)
    client = await register(http)
    result = await login(Browser(http), client, resource=RESOURCE)
    first = (await redeem(http, client, result)).json()
    second = (await refresh(http, client, first["refresh_token"])).json()
    assert await _introspect(http, second["access_token"])
    reuse = await refresh(http, client, first["refresh_token"])
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    # Everything in the family is dead, including the tokens the legitimate refresh produced.
    assert not await _introspect(http, second["access_token"])
    assert not await _introspect(http, first["access_token"])
    assert (await refresh(http, client, second["refresh_token"])).status_code == 400


async def test_refresh_token_is_bound_to_its_client(http: httpx.AsyncClient, cp: RunningControlPlane) -> None:
    await protect(http)
    client = await register(http)
    other = await register(http, name="other")
    tokens = (await redeem(http, client, await login(Browser(http), client, resource=RESOURCE))).json()
    response = await refresh(http, other, tokens["refresh_token"])
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


async def test_upstream_state_is_single_use(http: httpx.AsyncClient, cp: RunningControlPlane) -> None:
    await protect(http)
    client = await register(http)
    browser = Browser(http)
    response = await browser.get(authorize_url(client, verifier="v" * 43, resource=RESOURCE))
    response = await browser.post_form(
        "/authorize/consent", {**consent_fields(response.text), "decision": "approve"}
    )
    callback = (await http.get(response.headers["location"])).headers["location"]
    saved = dict(browser.cookies)
    assert (await browser.get(callback)).status_code == 302
    browser.cookies = saved  # even with the flow cookie put back
    response = await browser.get(callback)
    assert response.status_code == 400 and "already used" in response.text


async def test_callback_from_another_browser_is_refused(
    http: httpx.AsyncClient, cp: RunningControlPlane
) -> None:
    """Login CSRF: an attacker's callback URL opened in the victim's browser signs no one in."""
    await protect(http)
    client = await register(http)
    attacker = Browser(http)
    response = await attacker.get(authorize_url(client, verifier="v" * 43, resource=RESOURCE))
    response = await attacker.post_form(
        "/authorize/consent", {**consent_fields(response.text), "decision": "approve"}
    )
    callback = (await http.get(response.headers["location"])).headers["location"]
    victim = Browser(http)
    response = await victim.get(callback)
    assert response.status_code == 403 and "location" not in response.headers


async def test_consent_csrf(http: httpx.AsyncClient, cp: RunningControlPlane) -> None:
    await protect(http)
    client = await register(http)
    attacker = Browser(http)
    page = await attacker.get(authorize_url(client, verifier="v" * 43, resource=RESOURCE))
    fields = consent_fields(page.text)
    # The victim's browser has no consent cookie for this request: refused.
    victim = Browser(http)
    response = await victim.post_form("/authorize/consent", {**fields, "decision": "approve"})
    assert response.status_code == 403 and "location" not in response.headers
    # Right cookie, wrong CSRF token: refused.
    response = await attacker.post_form(
        "/authorize/consent", {**fields, "csrf_token": "forged", "decision": "approve"}
    )
    assert response.status_code == 403
    # A cookie from another request does not fit this one.
    other_page = await victim.get(authorize_url(client, verifier="w" * 43, resource=RESOURCE))
    assert other_page.status_code == 200
    response = await victim.post_form("/authorize/consent", {**fields, "decision": "approve"})
    assert response.status_code == 403


async def test_consent_page_headers_and_cookies(http: httpx.AsyncClient, cp: RunningControlPlane) -> None:
    await protect(http)
    client = await register(http)
    response = await http.get(authorize_url(client, verifier="v" * 43, resource=RESOURCE))
    assert response.status_code == 200
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    [cookie] = response.headers.get_list("set-cookie")
    assert cookie.startswith("__Host-mhp_consent=")
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"secure", "httponly", "samesite", "path"} <= attributes
    assert "SameSite=Lax" in cookie and "Domain" not in cookie
    assert (
        "127.0.0.1:38999" in response.text and "Test MCP client" in response.text and "mcp" in response.text
    )


async def test_consent_page_escapes_what_it_shows(http: httpx.AsyncClient, cp: RunningControlPlane) -> None:
    await protect(http)
    evil = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
    client = await register(http, name=evil)
    response = await http.get(authorize_url(client, verifier="v" * 43, resource=RESOURCE))
    assert response.status_code == 200
    assert "<script>" not in response.text and "<img" not in response.text
    assert "&lt;script&gt;" in response.text
    # The error page escapes too. A parameter sent twice is named on it: the name is the attacker's.
    response = await http.get(f"/authorize?{quote(evil)}=1&{quote(evil)}=2")
    assert response.status_code == 400 and "sent more than once" in response.text
    assert "<script>" not in response.text and "<img" not in response.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text


async def test_deny_returns_access_denied(http: httpx.AsyncClient, cp: RunningControlPlane) -> None:
    await protect(http)
    client = await register(http)
    browser = Browser(http)
    page = await browser.get(authorize_url(client, verifier="v" * 43, resource=RESOURCE))
    response = await browser.post_form(
        "/authorize/consent", {**consent_fields(page.text), "decision": "deny"}
    )
    redirect = query_of(response.headers["location"])
    assert (
        redirect["error"] == "access_denied" and redirect["state"] == "st-123" and redirect["iss"] == cp.url
    )


async def test_user_who_fails_upstream_login_gets_access_denied(
    http: httpx.AsyncClient, cp: RunningControlPlane, github: GitHubFake
) -> None:
    await protect(http)
    client = await register(http)
    github.next_login = "nobody"  # GitHub answers access_denied
    result = await login(Browser(http), client, resource=RESOURCE)
    assert result.redirect["error"] == "access_denied" and not result.code


async def test_resource_must_be_a_protected_proxy(http: httpx.AsyncClient, cp: RunningControlPlane) -> None:
    await protect(http)
    client = await register(http)
    browser = Browser(http)
    for resource in ("https://elsewhere.example/mcp", "https://mcp.test.localhost/other", "not a uri"):
        response = await browser.get(authorize_url(client, verifier="v" * 43, resource=resource))
        assert response.status_code == 302
        assert query_of(response.headers["location"])["error"] == "invalid_target", resource
    # A token request may narrow the resource, never widen it.
    result = await login(browser, client, resource=RESOURCE)
    response = await redeem(http, client, result, resource="https://other.test.localhost/mcp")
    assert response.status_code == 400 and response.json()["error"] == "invalid_target"


async def test_resource_defaults_when_only_one_is_possible(
    http: httpx.AsyncClient, cp: RunningControlPlane
) -> None:
    from jose import jwt

    await protect(http)
    client = await register(http)
    result = await login(Browser(http), client, resource=None)
    tokens = (await redeem(http, client, result)).json()
    assert jwt.get_unverified_claims(tokens["access_token"])["aud"] == "https://mcp.test.localhost/mcp"
    # With two protected proxies the client must say which.
    await protect(http, "second.test.localhost")
    response = await Browser(http).get(authorize_url(client, verifier="v" * 43, resource=None))
    assert query_of(response.headers["location"])["error"] == "invalid_target"


async def test_duplicate_parameters_are_refused(http: httpx.AsyncClient, cp: RunningControlPlane) -> None:
    await protect(http)
    client = await register(http)
    url = authorize_url(client, verifier="v" * 43, resource=RESOURCE) + "&client_id=other"
    response = await http.get(url)
    assert response.status_code == 400 and "location" not in response.headers


async def test_introspection_tells_a_client_only_about_its_own_tokens(
    http: httpx.AsyncClient, cp: RunningControlPlane
) -> None:
    await protect(http)
    client = await register(http)
    other = await register(http, name="scanner")
    tokens = (await redeem(http, client, await login(Browser(http), client, resource=RESOURCE))).json()
    for token in (tokens["access_token"], tokens["refresh_token"]):
        mine = await http.post("/introspect", data={"token": token, "client_id": client.client_id})
        theirs = await http.post("/introspect", data={"token": token, "client_id": other.client_id})
        assert mine.json()["active"] is True
        assert theirs.json() == {"active": False}
    anonymous = await http.post("/introspect", data={"token": tokens["access_token"]})
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "invalid_client"


async def test_revocation_by_another_client_revokes_nothing(
    http: httpx.AsyncClient, cp: RunningControlPlane
) -> None:
    await protect(http)
    client = await register(http)
    other = await register(http, name="other")
    tokens = (await redeem(http, client, await login(Browser(http), client, resource=RESOURCE))).json()
    for token in (tokens["access_token"], tokens["refresh_token"]):
        response = await http.post("/revoke", data={"token": token, "client_id": other.client_id})
        assert response.status_code == 200
    assert await _introspect(http, tokens["access_token"]) and await _introspect(
        http, tokens["refresh_token"]
    )


async def test_oversized_registration_is_refused(http: httpx.AsyncClient, cp: RunningControlPlane) -> None:
    # Past the control plane's body limit for unauthenticated endpoints: 413 while it streams.
    body = '{"redirect_uris": ["https://app.example/cb"], "client_name": "' + "x" * 70000 + '"}'
    response = await http.post("/register", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and response.json()["error"] == "invalid_request"
    # Under it, but past what a registration may hold: RFC 7591's error.
    body = '{"redirect_uris": ["https://app.example/cb"], "client_name": "' + "x" * 20000 + '"}'
    response = await http.post("/register", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["error"] == "invalid_client_metadata"


async def test_a_grant_is_refused_to_a_client_that_did_not_register_it(
    http: httpx.AsyncClient, cp: RunningControlPlane
) -> None:
    # The CLI's built-in client registered only the device-code and refresh grants.
    response = await http.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": "x",
            "code_verifier": "v" * 43,
            "client_id": "mhp-cli",
        },
    )
    assert response.status_code == 400 and response.json()["error"] == "unauthorized_client"


async def test_upstream_login_state_and_verifier_are_not_stored_in_plaintext(
    http: httpx.AsyncClient, cp: RunningControlPlane, redis_client: aioredis.Redis
) -> None:
    """Whoever reads Redis must not learn our state at GitHub or our PKCE verifier: with a code
    intercepted on its way back, those would finish the user's sign-in elsewhere."""
    await protect(http)
    client = await register(http)
    browser = Browser(http)
    page = await browser.get(authorize_url(client, verifier="v" * 43, resource=RESOURCE))
    to_github = await browser.post_form(
        "/authorize/consent", {**consent_fields(page.text), "decision": "approve"}
    )
    upstream_state = query_of(to_github.headers["location"])["state"]
    dump = ""
    for key in await redis_client.keys("*"):
        dump += key + "\n"
        if await redis_client.type(key) == "string":
            dump += f"{await redis_client.get(key)}\n"
    assert upstream_state not in dump
    stored = json.loads(await redis_client.get(keys.oauth_upstream_state(token_sha256(upstream_state))))
    assert stored["code_verifier_encrypted"].startswith("mhp-enc:v1:") and "code_verifier" not in stored
    # The sign-in still completes.
    async with httpx.AsyncClient() as outside:
        callback = (await outside.get(to_github.headers["location"])).headers["location"]
    response = await browser.get(callback)
    assert response.status_code == 302 and query_of(response.headers["location"])["code"]
