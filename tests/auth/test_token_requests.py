"""Token requests that fail a check must leave the credential they present usable: a refresh asking for a
wider scope or resource, and a code redemption by another client, with a wrong PKCE verifier or a wider
resource. Before the fix the refresh token was rotated (then the client's next, valid refresh looked like
reuse and revoked the whole grant) and the code was consumed (so anyone holding a stolen code could burn
it). The control plane runs with OAUTH_REFRESH_GRACE_SECONDS=0, so any reuse is treated as theft."""

from __future__ import annotations

import httpx
import pytest
from jose import jwt

from tests.control_plane.conftest import ADMIN, RunningControlPlane

from .conftest import MCP_HOST, RESOURCE, protect
from .oauth_flow import Browser, Client, login, redeem, refresh, register

pytestmark = pytest.mark.auth


async def _two_scope_grant(http: httpx.AsyncClient) -> tuple[Client, dict[str, str]]:
    """A client holding tokens for RESOURCE with the scopes `mcp read`."""
    await protect(http)
    response = await http.put(
        f"/api/v1/proxy/targets/{MCP_HOST}/resource",
        json={"path": "/mcp", "scopes_supported": ["mcp", "read"]},
        headers=ADMIN,
    )
    assert response.status_code == 200, response.text
    client = await register(http)
    result = await login(Browser(http), client, resource=RESOURCE, scope="mcp read")
    response = await redeem(http, client, result)
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert tokens["scope"] == "mcp read"
    return client, tokens


async def test_refresh_cannot_widen_the_scope_and_may_narrow_it(
    http: httpx.AsyncClient, cp: RunningControlPlane
) -> None:
    client, tokens = await _two_scope_grant(http)
    for wider in ("mcp read admin", "admin"):
        response = await refresh(http, client, tokens["refresh_token"], scope=wider)
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid_scope"
    response = await refresh(http, client, tokens["refresh_token"], scope="read")
    assert response.status_code == 200, response.text
    narrowed = response.json()
    assert narrowed["scope"] == "read"
    assert jwt.get_unverified_claims(narrowed["access_token"])["scope"] == "read"
    # Narrowing one refresh does not shrink the grant: the next refresh may ask for all of it again.
    response = await refresh(http, client, narrowed["refresh_token"])
    assert response.status_code == 200 and response.json()["scope"] == "mcp read"


async def test_a_refused_refresh_does_not_burn_the_refresh_token(
    http: httpx.AsyncClient, cp: RunningControlPlane
) -> None:
    client, tokens = await _two_scope_grant(http)
    wider_scope = await refresh(http, client, tokens["refresh_token"], scope="mcp admin")
    assert wider_scope.status_code == 400 and wider_scope.json()["error"] == "invalid_scope"
    other_resource = await refresh(
        http, client, tokens["refresh_token"], resource="https://other.test.localhost/mcp"
    )
    assert other_resource.status_code == 400 and other_resource.json()["error"] == "invalid_target"
    # The same refresh token still works, once, and the grant is intact.
    response = await refresh(http, client, tokens["refresh_token"])
    assert response.status_code == 200, response.text
    rotated = response.json()
    for token in (tokens["access_token"], rotated["access_token"]):
        introspection = await http.post("/introspect", data={"token": token}, headers=ADMIN)
        assert introspection.json()["active"] is True
    assert (await refresh(http, client, rotated["refresh_token"])).status_code == 200


async def test_a_refused_code_redemption_does_not_burn_the_code(
    http: httpx.AsyncClient, cp: RunningControlPlane
) -> None:
    await protect(http)
    client = await register(http)
    thief = await register(http, name="thief")
    result = await login(Browser(http), client, resource=RESOURCE)
    attempts = [
        await redeem(http, thief, result),  # another client
        await redeem(http, client, result, code_verifier="W" * 50),  # a wrong PKCE verifier
        await redeem(http, client, result, resource="https://other.test.localhost/mcp"),  # a wider resource
    ]
    for response in attempts:
        assert response.status_code == 400 and response.json()["error"] in ("invalid_grant", "invalid_target")
    response = await redeem(http, client, result)
    assert response.status_code == 200, response.text
    # Single use still holds: the second successful-looking redemption is a replay and revokes the grant.
    replay = await redeem(http, client, result)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    introspection = await http.post(
        "/introspect", data={"token": response.json()["access_token"]}, headers=ADMIN
    )
    assert introspection.json() == {"active": False}
