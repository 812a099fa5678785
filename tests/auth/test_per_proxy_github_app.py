"""A protected proxy with its own GitHub OAuth app: logins for that resource go through that app (its
secret decrypted only to talk to GitHub), the secret is stored encrypted and never returned by the API."""

from __future__ import annotations

import httpx
import pytest
import redis.asyncio as aioredis

from shared import keys
from tests.control_plane.conftest import ADMIN, RunningControlPlane

from .conftest import MCP_HOST, RESOURCE, protect
from .github_fake import GitHubFake
from .oauth_flow import Browser, login, redeem, register

pytestmark = pytest.mark.auth

APP_ID = "per-proxy-app"
APP_SECRET = "per-proxy-secret-value-0123456789"


async def test_proxy_github_app_is_used_and_its_secret_never_shown(
    http: httpx.AsyncClient, cp: RunningControlPlane, github: GitHubFake, redis_client: aioredis.Redis
) -> None:
    github.apps[APP_ID] = APP_SECRET
    await protect(http)
    path = f"/api/v1/proxy/targets/{MCP_HOST}/auth"
    body = {"allowed_users": ["alice"], "github_client_id": APP_ID, "github_client_secret": APP_SECRET}
    response = await http.put(path, json=body, headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json()["github_client_secret_set"] is True
    for text in (response.text, (await http.get(path, headers=ADMIN)).text):
        assert APP_SECRET not in text and "encrypted" not in text
    stored = await redis_client.hget(keys.proxy_auth(), MCP_HOST)
    assert APP_SECRET not in stored and "mhp-enc:v1:" in stored

    client = await register(http)
    result = await login(Browser(http), client, resource=RESOURCE)
    assert github.authorize_requests[-1]["client_id"] == APP_ID
    assert (await redeem(http, client, result)).status_code == 200  # GitHub accepted the app's secret

    # A PUT that does not resend the secret keeps it; a new client id without a secret is refused.
    kept = await http.put(path, json={"allowed_users": ["alice"], "github_client_id": APP_ID}, headers=ADMIN)
    assert kept.status_code == 200 and kept.json()["github_client_secret_set"] is True
    refused = await http.put(
        path, json={"allowed_users": ["alice"], "github_client_id": "other"}, headers=ADMIN
    )
    assert refused.status_code == 422
    # Dropping the override returns logins to the default app.
    cleared = await http.put(path, json={"allowed_users": ["alice"]}, headers=ADMIN)
    assert cleared.json()["github_client_secret_set"] is False and cleared.json()["github_client_id"] == ""
    await login(Browser(http), client, resource=RESOURCE)
    assert github.authorize_requests[-1]["client_id"] == github.client_id


async def test_wrong_app_secret_fails_the_login_cleanly(
    http: httpx.AsyncClient, cp: RunningControlPlane, github: GitHubFake
) -> None:
    github.apps[APP_ID] = APP_SECRET
    await protect(http)
    body = {"allowed_users": ["alice"], "github_client_id": APP_ID, "github_client_secret": "wrong"}
    assert (
        await http.put(f"/api/v1/proxy/targets/{MCP_HOST}/auth", json=body, headers=ADMIN)
    ).status_code == 200
    client = await register(http)
    result = await login(Browser(http), client, resource=RESOURCE)
    assert result.redirect["error"] == "access_denied" and not result.code
