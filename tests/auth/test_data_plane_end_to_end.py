"""The real control plane (authorization server) and the real data plane (protected resource) together, with a
real MCP SDK server upstream: a 2025-03-26-style client that finds everything on the resource's own origin,
revocation at the control plane refused by the data plane within 1 s, and the PRM a data plane serves
naming the control plane's issuer."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import redis.asyncio as aioredis

from tests.control_plane.conftest import ADMIN, RunningControlPlane
from tests.data_plane.conftest import DataPlane

from .conftest import data_plane_caught_up, protect
from .oauth_flow import Browser, login, redeem, register

pytestmark = pytest.mark.auth

REVOCATION_DEADLINE_SECONDS = 1.0  # the bound
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-03-26",
        "capabilities": {},
        "clientInfo": {"name": "e2e", "version": "1"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


@pytest.fixture
async def resource_origin(
    http: httpx.AsyncClient,
    cp: RunningControlPlane,
    redis_client: aioredis.Redis,
    auth_data_plane: DataPlane,
    mcp_upstream: str,
) -> str:
    """`127.0.0.1` protected for alice, plus the built-in AUTH_HOST proxy (the flush removed the one the
    control plane made at startup), both served by the data plane."""
    response = await http.post(
        "/api/v1/proxy/targets/",
        json={"hostname": "auth.test.localhost", "target_url": cp.url},
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text
    await protect(http, "127.0.0.1", users=["alice"], target_url=mcp_upstream)
    await data_plane_caught_up(redis_client, auth_data_plane)
    return f"http://127.0.0.1:{auth_data_plane.http_port}"


async def test_prm_on_the_data_plane_names_the_control_plane_as_issuer(
    resource_origin: str, cp: RunningControlPlane
) -> None:
    async with httpx.AsyncClient(base_url=resource_origin) as client:
        prm = (await client.get("/.well-known/oauth-protected-resource/mcp")).json()
        assert prm["resource"] == f"{resource_origin}/mcp"
        assert prm["authorization_servers"] == [cp.url]
        # The issuer's metadata, fetched where the PRM says, names the same issuer.
        metadata = (await client.get(f"{cp.url}/.well-known/oauth-authorization-server")).json()
        assert metadata["issuer"] == cp.url


async def test_a_2025_03_26_client_finds_everything_on_the_resource_origin(resource_origin: str) -> None:
    """Metadata, registration, authorization (with consent and the GitHub login) and the token endpoint,
    all through the protected host, which forwards them to the authorization server; then the token works
    on the MCP endpoint and nothing else is needed."""
    async with httpx.AsyncClient(base_url=resource_origin, timeout=20) as on_resource:
        response = await on_resource.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS)
        assert response.status_code == 401
        metadata = await on_resource.get("/.well-known/oauth-authorization-server")
        assert metadata.status_code == 200 and metadata.json()["code_challenge_methods_supported"] == ["S256"]
        client = await register(on_resource)
        result = await login(Browser(on_resource), client, resource=f"{resource_origin}/mcp")
        tokens = await redeem(on_resource, client, result)
        assert tokens.status_code == 200, tokens.text
        access_token = tokens.json()["access_token"]
        response = await on_resource.post(
            "/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "Authorization": f"Bearer {access_token}"}
        )
        assert response.status_code == 200, response.text
        assert "mcp-session-id" in response.headers  # Streamable HTTP passed through


async def test_revocation_at_the_control_plane_is_refused_by_the_data_plane_within_a_second(
    resource_origin: str, http: httpx.AsyncClient
) -> None:
    client = await register(http)
    result = await login(Browser(http), client, resource=f"{resource_origin}/mcp")
    access_token = (await redeem(http, client, result)).json()["access_token"]
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {access_token}"}
    async with httpx.AsyncClient(base_url=resource_origin, timeout=20) as on_resource:
        assert (await on_resource.post("/mcp", json=INITIALIZE, headers=headers)).status_code == 200
        response = await http.post("/revoke", data={"token": access_token, "client_id": client.client_id})
        assert response.status_code == 200
        revoked_at = time.monotonic()
        status = 200
        while time.monotonic() - revoked_at < REVOCATION_DEADLINE_SECONDS:
            response = await on_resource.post("/mcp", json=INITIALIZE, headers=headers)
            status = response.status_code
            if status == 401:
                assert "revoked" in response.json()["error_description"]
                break
            await asyncio.sleep(0.02)
        assert status == 401, "the data plane still accepted a revoked token after 1 s"
