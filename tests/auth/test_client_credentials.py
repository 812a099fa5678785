"""The client_credentials grant end to end: the admin pre-registers a machine client with the grant, the
control plane issues it a user-less token for a protected resource, and the real data plane admits that
token only where the proxy lists the client in `allowed_clients` (never through `allowed_users: ["*"]`)."""

from __future__ import annotations

import httpx
import pytest
import redis.asyncio as aioredis
from jose import jwt

from tests.control_plane.conftest import ADMIN, RunningControlPlane
from tests.data_plane.conftest import DataPlane

from .conftest import data_plane_caught_up, protect
from .oauth_flow import register
from .test_data_plane_end_to_end import INITIALIZE, MCP_HEADERS

pytestmark = pytest.mark.auth

CLIENTS = "/api/v1/oauth/clients/"
HOST = "127.0.0.1"


async def _machine_client(http: httpx.AsyncClient, **overrides: object) -> tuple[str, str]:
    body = {
        "client_name": "Nightly job",
        "redirect_uris": ["http://127.0.0.1/unused"],
        "allow_client_credentials": True,
        **overrides,
    }
    response = await http.post(CLIENTS, json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    return response.json()["client_id"], response.json()["client_secret"]


async def _token(http: httpx.AsyncClient, client: tuple[str, str], **data: str) -> httpx.Response:
    return await http.post("/token", data={"grant_type": "client_credentials", **data}, auth=client)


async def _set_auth(http: httpx.AsyncClient, **auth: object) -> None:
    response = await http.put(f"/api/v1/proxy/targets/{HOST}/auth", json=auth, headers=ADMIN)
    assert response.status_code == 200, response.text


async def test_machine_token_is_admitted_only_by_allowed_clients(
    http: httpx.AsyncClient,
    cp: RunningControlPlane,
    redis_client: aioredis.Redis,
    auth_data_plane: DataPlane,
    mcp_upstream: str,
) -> None:
    await protect(http, HOST, users=["*"], target_url=mcp_upstream)
    origin = f"http://{HOST}:{auth_data_plane.http_port}"
    resource = f"{origin}/mcp"
    metadata = (await http.get("/.well-known/oauth-authorization-server")).json()
    assert "client_credentials" in metadata["grant_types_supported"]

    client = await _machine_client(http)
    issued = await _token(http, client, resource=resource)
    assert issued.status_code == 200, issued.text
    body = issued.json()
    assert "refresh_token" not in body and body["scope"] == "mcp"
    claims = jwt.get_unverified_claims(body["access_token"])
    assert claims["sub"] == f"client:{client[0]}" and claims["client_id"] == client[0]
    assert claims["aud"] == resource and "login" not in claims and "orgs" not in claims

    bearer = {**MCP_HEADERS, "Authorization": f"Bearer {body['access_token']}"}
    await data_plane_caught_up(redis_client, auth_data_plane)
    async with httpx.AsyncClient(base_url=origin, timeout=20) as on_resource:
        # "*" admits any signed-in user; a token with no user behind it is not one.
        refused = await on_resource.post("/mcp", json=INITIALIZE, headers=bearer)
        assert refused.status_code == 403, refused.text
        assert client[0] in refused.json()["error_description"]

        await _set_auth(http, allowed_users=["*"], allowed_clients=[client[0]])
        await data_plane_caught_up(redis_client, auth_data_plane)
        admitted = await on_resource.post("/mcp", json=INITIALIZE, headers=bearer)
        assert admitted.status_code == 200, admitted.text

        # Another machine client, not listed, stays out.
        other = await _machine_client(http, client_name="Other job")
        other_token = (await _token(http, other, resource=resource)).json()["access_token"]
        headers = {**MCP_HEADERS, "Authorization": f"Bearer {other_token}"}
        assert (await on_resource.post("/mcp", json=INITIALIZE, headers=headers)).status_code == 403


async def test_client_credentials_refusals(
    http: httpx.AsyncClient, cp: RunningControlPlane, mcp_upstream: str
) -> None:
    await protect(http, HOST, users=["alice"], target_url=mcp_upstream)
    resource = "http://127.0.0.1:8080/mcp"
    machine = await _machine_client(http)

    wrong_secret = await _token(http, (machine[0], "not-it"), resource=resource)
    assert wrong_secret.status_code == 401 and wrong_secret.json()["error"] == "invalid_client"
    elsewhere = await _token(http, machine, resource="https://elsewhere.example/mcp")
    assert elsewhere.status_code == 400 and elsewhere.json()["error"] == "invalid_target"
    bad_scope = await _token(http, machine, resource=resource, scope="admin")
    assert bad_scope.status_code == 400 and bad_scope.json()["error"] == "invalid_scope"

    # Without the grant enabled, and for self-registered clients, the grant is refused.
    plain = await http.post(
        CLIENTS,
        json={"client_name": "Web app", "redirect_uris": ["https://app.example/cb"]},
        headers=ADMIN,
    )
    plain_client = (plain.json()["client_id"], plain.json()["client_secret"])
    refused = await _token(http, plain_client, resource=resource)
    assert refused.status_code == 400 and refused.json()["error"] == "unauthorized_client"
    registered = await register(http, auth_method="client_secret_basic")
    refused = await _token(http, (registered.client_id, registered.secret), resource=resource)
    assert refused.status_code == 400 and refused.json()["error"] == "unauthorized_client"

    # A public client cannot be given the grant at all.
    public = await http.post(
        CLIENTS,
        json={
            "client_name": "SPA",
            "redirect_uris": ["https://app.example/cb"],
            "token_endpoint_auth_method": "none",
            "allow_client_credentials": True,
        },
        headers=ADMIN,
    )
    assert public.status_code == 422 and "confidential" in public.text
