"""Pre-registered OAuth clients (`/api/v1/oauth/clients/`, admin only) against the real control plane: they
go through the whole authorization-code flow like registered ones, never expire, keep only the hash of their
secret, cannot be managed through RFC 7592, and once deleted can neither authorize nor refresh."""

from __future__ import annotations

import httpx
import pytest
import redis.asyncio as aioredis

from shared import keys
from tests.control_plane.conftest import ADMIN, RunningControlPlane, bearer
from tests.harness.redis_dump import dump_redis

from .conftest import RESOURCE, protect
from .oauth_flow import REDIRECT_URI, Browser, Client, authorize_url, login, redeem

pytestmark = pytest.mark.auth

CLIENTS = "/api/v1/oauth/clients/"


async def _create(http: httpx.AsyncClient, **overrides: object) -> httpx.Response:
    body = {"client_name": "Partner tool", "redirect_uris": [REDIRECT_URI], **overrides}
    return await http.post(CLIENTS, json=body, headers=ADMIN)


async def test_admin_registers_lists_and_deletes(
    http: httpx.AsyncClient, cp: RunningControlPlane, redis_client: aioredis.Redis
) -> None:
    response = await _create(http)
    assert response.status_code == 201, response.text
    created = response.json()
    client_id, secret = created["client_id"], created["client_secret"]
    assert client_id.startswith("mhp_pre_") and len(secret) >= 40
    assert created["token_endpoint_auth_method"] == "client_secret_basic"
    assert created["grant_types"] == ["authorization_code", "refresh_token"]

    listed = (await http.get(CLIENTS, headers=ADMIN)).json()
    assert [c["client_id"] for c in listed] == [client_id] and "client_secret" not in listed[0]
    shown = (await http.get(CLIENTS + client_id, headers=ADMIN)).json()
    assert shown["client_name"] == "Partner tool" and "client_secret" not in shown

    # Stored without expiry, and the secret only as its hash.
    assert await redis_client.ttl(keys.oauth_preregistered_clients()) == -1
    assert secret not in await dump_redis(redis_client)
    # No registration access token exists for it: RFC 7592 management is refused whatever is sent.
    for headers in ({}, bearer("x" * 43), {"Authorization": "Bearer"}):
        managed = await http.get(f"/register/{client_id}", headers=headers)
        assert managed.status_code == 401

    public = await _create(http, client_name="Browser app", token_endpoint_auth_method="none")
    assert public.status_code == 201 and public.json()["client_secret"] is None

    assert (await http.delete(CLIENTS + client_id, headers=ADMIN)).status_code == 204
    assert (await http.get(CLIENTS + client_id, headers=ADMIN)).status_code == 404
    assert (await http.delete(CLIENTS + client_id, headers=ADMIN)).status_code == 404


async def test_bad_input_and_non_admins_are_refused(http: httpx.AsyncClient, cp: RunningControlPlane) -> None:
    cases = [
        ({"redirect_uris": ["http://example.com/callback"]}, "https"),
        ({"redirect_uris": []}, "redirect_uris"),
        ({"client_name": ""}, "client_name"),
        ({"token_endpoint_auth_method": "private_key_jwt"}, "token_endpoint_auth_method"),
        ({"grant_types": ["client_credentials"]}, "grant_types"),
    ]
    for overrides, mentioned in cases:
        response = await _create(http, **overrides)
        assert response.status_code == 422, (overrides, response.text)
        assert mentioned in response.text, (overrides, response.text)

    created = await http.post("/api/v1/tokens/", json={"name": "bob"}, headers=ADMIN)
    bob = bearer(created.json()["token"])
    body = {"client_name": "x", "redirect_uris": [REDIRECT_URI]}
    refused = await http.post(CLIENTS, json=body, headers=bob)
    assert refused.status_code == 403 and "admin" in refused.text
    assert (await http.get(CLIENTS, headers=bob)).status_code == 403
    assert (await http.get(CLIENTS)).status_code == 401
    assert (await http.get(CLIENTS, headers=ADMIN)).json() == []  # nothing was stored by the refusals


async def test_preregistered_client_completes_the_flow_until_deleted(
    http: httpx.AsyncClient, cp: RunningControlPlane
) -> None:
    await protect(http)
    created = (await _create(http)).json()
    client = Client(created["client_id"], created, created["client_secret"])

    result = await login(Browser(http), client, resource=RESOURCE)
    assert result.code, result.redirect
    data = {
        "grant_type": "authorization_code",
        "code": result.code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": result.verifier,
    }
    wrong = await http.post("/token", data=data, auth=(client.client_id, "not-the-secret"))
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    tokens = await http.post("/token", data=data, auth=(client.client_id, client.secret))
    assert tokens.status_code == 200, tokens.text
    assert tokens.json()["access_token"] and tokens.json()["refresh_token"]

    assert (await http.delete(CLIENTS + client.client_id, headers=ADMIN)).status_code == 204
    refreshed = await http.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens.json()["refresh_token"]},
        auth=(client.client_id, client.secret),
    )
    assert refreshed.status_code == 401 and refreshed.json()["error"] == "invalid_client"
    again = await Browser(http).get(authorize_url(client, verifier="v" * 43, resource=RESOURCE))
    assert again.status_code != 302  # an unknown client is never redirected anywhere
    # A public pre-registered client uses PKCE alone.
    public = (await _create(http, client_name="Browser app", token_endpoint_auth_method="none")).json()
    public_client = Client(public["client_id"], public)
    result = await login(Browser(http), public_client, resource=RESOURCE)
    assert (await redeem(http, public_client, result)).status_code == 200
