"""The whole authorization-server flow against the real control plane and the GitHub stand-in:
metadata -> DCR -> authorize -> consent -> GitHub -> callback -> code -> token -> refresh -> introspect
-> revoke."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from jose import jwt

from tests.control_plane.conftest import ADMIN, RunningControlPlane

from .conftest import MCP_HOST, RESOURCE, protect
from .github_fake import GitHubFake
from .oauth_flow import REDIRECT_URI, Browser, login, redeem, refresh, register

pytestmark = pytest.mark.auth


async def test_metadata_documents(http: httpx.AsyncClient, cp: RunningControlPlane) -> None:
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        response = await http.get(path, headers={"Origin": "https://inspector.example"})
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "*"
        doc = response.json()
        assert doc["issuer"] == cp.url
        assert doc["authorization_endpoint"] == f"{cp.url}/authorize"
        assert doc["token_endpoint"] == f"{cp.url}/token"
        assert doc["registration_endpoint"] == f"{cp.url}/register"
        assert doc["code_challenge_methods_supported"] == ["S256"]
        assert doc["authorization_response_iss_parameter_supported"] is True
        assert doc["resource_indicators_supported"] is True
        assert set(doc["token_endpoint_auth_methods_supported"]) == {
            "none",
            "client_secret_post",
            "client_secret_basic",
        }
        assert {"authorization_code", "refresh_token"} <= set(doc["grant_types_supported"])
    jwks = (await http.get("/jwks.json")).json()
    assert jwks["keys"][0]["kty"] == "RSA" and jwks["keys"][0]["kid"]


async def test_cors_preflight_on_token_endpoint(http: httpx.AsyncClient, cp: RunningControlPlane) -> None:
    response = await http.options(
        "/token",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "*"
    assert "POST" in response.headers["access-control-allow-methods"]
    # /authorize is a browser navigation, not a CORS endpoint.
    response = await http.get("/authorize", headers={"Origin": "https://app.example"})
    assert "access-control-allow-origin" not in response.headers


async def test_full_flow(http: httpx.AsyncClient, cp: RunningControlPlane, github: GitHubFake) -> None:
    await protect(http)
    client = await register(http)
    browser = Browser(http)
    result = await login(browser, client, resource=RESOURCE)
    assert result.redirect["state"] == "st-123"
    assert result.redirect["iss"] == cp.url
    # PKCE went upstream too.
    assert github.authorize_requests[-1]["code_challenge_method"] == "S256"
    assert github.authorize_requests[-1]["scope"] == "user:email read:org"

    response = await redeem(http, client, result)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    tokens = response.json()
    assert tokens["token_type"] == "Bearer" and tokens["scope"] == "mcp"
    jwks = (await http.get("/jwks.json")).json()
    header = jwt.get_unverified_header(tokens["access_token"])
    assert header["alg"] == "RS256" and header["kid"] == jwks["keys"][0]["kid"]
    claims = jwt.decode(tokens["access_token"], jwks, algorithms=["RS256"], audience=RESOURCE, issuer=cp.url)
    assert claims["login"] == "alice" and claims["sub"] == "github:1001"
    assert claims["client_id"] == client.client_id and claims["scope"] == "mcp"
    assert claims["orgs"] == ["acme"]
    assert claims["exp"] > time.time() and claims["jti"]

    # Refresh rotates.
    response = await refresh(http, client, tokens["refresh_token"])
    assert response.status_code == 200, response.text
    rotated = response.json()
    assert rotated["refresh_token"] != tokens["refresh_token"]
    new_claims = jwt.decode(rotated["access_token"], jwks, algorithms=["RS256"], audience=RESOURCE)
    assert new_claims["jti"] != claims["jti"]

    # Introspection (as the client).
    response = await http.post(
        "/introspect", data={"token": rotated["access_token"], "client_id": client.client_id}
    )
    assert response.json()["active"] is True
    assert response.json()["username"] == "alice"
    response = await http.post(
        "/introspect", data={"token": rotated["refresh_token"], "client_id": client.client_id}
    )
    assert response.json()["active"] is True and response.json()["token_type"] == "refresh_token"

    # Revocation of the refresh token ends the grant, access tokens included.
    response = await http.post(
        "/revoke", data={"token": rotated["refresh_token"], "client_id": client.client_id}
    )
    assert response.status_code == 200
    for token in (rotated["refresh_token"], rotated["access_token"]):
        response = await http.post("/introspect", data={"token": token}, headers=ADMIN)
        assert response.json() == {"active": False}
    response = await refresh(http, client, rotated["refresh_token"])
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


async def test_remembered_consent_skips_the_page(http: httpx.AsyncClient, cp: RunningControlPlane) -> None:
    await protect(http)
    client = await register(http)
    browser = Browser(http)
    await login(browser, client, resource=RESOURCE)
    # Same browser (session cookie), same client: straight back with a code, no consent page.
    result = await login(browser, client, resource=RESOURCE, state="second")
    assert result.code and result.redirect["state"] == "second"
    # A different client still needs consent.
    other = await register(http, name="Other")
    from .oauth_flow import authorize_url

    response = await browser.get(authorize_url(other, verifier="v" * 43, resource=RESOURCE))
    assert response.status_code == 200 and "Other" in response.text


async def test_confidential_client_basic_and_post(http: httpx.AsyncClient, cp: RunningControlPlane) -> None:
    await protect(http)
    basic = await register(http, auth_method="client_secret_basic")
    assert basic.secret
    result = await login(Browser(http), basic, resource=RESOURCE)
    data = {
        "grant_type": "authorization_code",
        "code": result.code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": result.verifier,
    }
    response = await http.post("/token", data=data, auth=(basic.client_id, "wrong"))
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"].startswith("Basic")
    # The failed attempt did not burn the code (client auth runs before the code is touched).
    response = await http.post("/token", data=data, auth=(basic.client_id, basic.secret))
    assert response.status_code == 200, response.text

    post = await register(http, auth_method="client_secret_post")
    result = await login(Browser(http), post, resource=RESOURCE)
    response = await redeem(http, post, result, client_secret=post.secret)
    assert response.status_code == 200, response.text


async def test_registration_management(http: httpx.AsyncClient, cp: RunningControlPlane) -> None:
    client = await register(http)
    uri = client.registration["registration_client_uri"]
    token = client.registration["registration_access_token"]
    assert uri == f"{cp.url}/register/{client.client_id}"
    path = f"/register/{client.client_id}"
    assert (await http.get(path)).status_code == 401
    assert (await http.get(path, headers={"Authorization": "Bearer nope"})).status_code == 401
    response = await http.get(path, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200 and response.json()["client_name"] == "Test MCP client"
    assert "registration_access_token" not in response.json()
    response = await http.put(
        path,
        json={
            "client_id": client.client_id,
            "redirect_uris": ["https://app.example/cb"],
            "client_name": "Renamed",
            "token_endpoint_auth_method": "none",
        },
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["redirect_uris"] == ["https://app.example/cb"]
    assert (await http.delete(path, headers={"Authorization": f"Bearer {token}"})).status_code == 204
    assert (await http.get(path, headers={"Authorization": f"Bearer {token}"})).status_code == 401


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"redirect_uris": ["http://evil.example/cb"]}, "invalid_redirect_uri"),
        ({"redirect_uris": ["https://app.example/cb#frag"]}, "invalid_redirect_uri"),
        ({"redirect_uris": []}, "invalid_redirect_uri"),
        (
            {"redirect_uris": ["https://app.example/cb"], "grant_types": ["password"]},
            "invalid_client_metadata",
        ),
        (
            {"redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "private_key_jwt"},
            "invalid_client_metadata",
        ),
        ([1, 2], "invalid_client_metadata"),
    ],
)
async def test_registration_rejects_bad_metadata(
    http: httpx.AsyncClient, cp: RunningControlPlane, body: object, error: str
) -> None:
    response = await http.post(
        "/register", content=json.dumps(body), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == error


async def test_registration_survives_a_restart(http: httpx.AsyncClient, cp: RunningControlPlane) -> None:
    """Registrations live in Redis: a client registered before a restart still logs in after it."""
    await protect(http)
    client = await register(http)
    cp.service.stop()
    cp.service.start()
    result = await login(Browser(http), client, resource=RESOURCE)
    assert (await redeem(http, client, result)).status_code == 200


async def test_resource_registry_lists_protected_proxies(
    http: httpx.AsyncClient, cp: RunningControlPlane
) -> None:
    await protect(http)
    response = await http.get("/api/v1/resources/", headers=ADMIN)
    assert response.status_code == 200
    [entry] = response.json()
    assert entry["proxy"] == MCP_HOST and entry["resource"] == f"https://{MCP_HOST}/mcp"
    assert entry["scopes"] == ["mcp"] and entry["allowed_users"] == ["alice"]


async def test_prompt_parameter(http: httpx.AsyncClient, cp: RunningControlPlane) -> None:
    from .oauth_flow import authorize_url, query_of

    await protect(http)
    client = await register(http)
    browser = Browser(http)
    # prompt=none with nobody signed in: an error, never a page.
    response = await browser.get(authorize_url(client, verifier="v" * 43, resource=RESOURCE, prompt="none"))
    assert query_of(response.headers["location"])["error"] == "login_required"
    await login(browser, client, resource=RESOURCE)
    # Signed in and approved before: prompt=none succeeds silently; prompt=consent shows the page again.
    response = await browser.get(authorize_url(client, verifier="v" * 43, resource=RESOURCE, prompt="none"))
    assert "code" in query_of(response.headers["location"])
    response = await browser.get(
        authorize_url(client, verifier="v" * 43, resource=RESOURCE, prompt="consent")
    )
    assert response.status_code == 200 and "Approve" in response.text
