"""The privilege escalation an outside review found (issue 9, item 1), replayed step by step against the
real control plane (a `python -m control_plane` process) and the GitHub stand-in:

  an ordinary API token creates the wildcard proxy `*.BASE_DOMAIN`, protects it for any user, and its DCR
  client asks /authorize for `resource=https://auth.BASE_DOMAIN` (the issuer's host, which the wildcard
  covered); an admin who approves gets a token whose audience is the issuer, which the management API took
  as an admin login whatever client it was issued to.

Every link of the chain is now refused on its own: the wildcard (admin-only), the auth host as a name, the
issuer's origin as a resource, and a management-API token from any client but the built-in CLI."""

from __future__ import annotations

import secrets

import httpx
import pytest
import redis.asyncio as aioredis

from control_plane.oauth.api_access import CLI_CLIENT_ID
from control_plane.oauth.pkce import new_verifier, s256
from control_plane.oauth.state_store import OAuthState
from control_plane.records import AuthorizationCode, OAuthGrant, RefreshRecord, UserIdentity
from shared.secrets import token_sha256
from tests.control_plane.conftest import ADMIN, RunningControlPlane, bearer

from .insider_tokens import active_signing_keys, management_token
from .oauth_flow import REDIRECT_URI, Browser, LoginResult, authorize_url, query_of, redeem, refresh, register

pytestmark = pytest.mark.auth

PROXIES = "/api/v1/proxy/targets/"
AUTH_HOST = "auth.test.localhost"  # BASE_DOMAIN=test.localhost in the auth fixtures


async def _token(http: httpx.AsyncClient, name: str) -> dict[str, str]:
    response = await http.post("/api/v1/tokens/", json={"name": name}, headers=ADMIN)
    assert response.status_code == 201, response.text
    return bearer(response.json()["token"])


async def test_an_ordinary_token_cannot_claim_the_wildcard_or_the_auth_host(
    http: httpx.AsyncClient, cp: RunningControlPlane
) -> None:
    mallory = await _token(http, "mallory")
    for hostname in ("*.test.localhost", AUTH_HOST, "AUTH.Test.localhost."):
        response = await http.post(
            PROXIES, json={"hostname": hostname, "target_url": "http://93.184.216.34"}, headers=mallory
        )
        assert response.status_code == 403, (hostname, response.text)
    covering = await http.post(
        PROXIES, json={"hostname": "*.test.localhost", "target_url": "http://93.184.216.34"}, headers=mallory
    )
    assert "the system itself serves" in covering.json()["detail"]
    wildcard = await http.post(
        PROXIES,
        json={"hostname": "*.apps.test.localhost", "target_url": "http://93.184.216.34"},
        headers=mallory,
    )
    assert wildcard.status_code == 403 and "admin-only" in wildcard.json()["detail"]
    auth_host = await http.post(
        PROXIES, json={"hostname": AUTH_HOST, "target_url": "http://93.184.216.34"}, headers=mallory
    )
    assert "the system itself serves" in auth_host.json()["detail"]
    assert all(p["owner"] != "mallory" for p in (await http.get(PROXIES, headers=ADMIN)).json())


@pytest.mark.parametrize(
    "resource", ["https://auth.test.localhost", "https://auth.test.localhost/mcp", "ISSUER"]
)
async def test_the_issuer_is_never_a_resource_even_under_a_protected_wildcard(
    http: httpx.AsyncClient, cp: RunningControlPlane, resource: str
) -> None:
    # The wildcard exists and is protected for everyone (only the admin can make it now); before the fix
    # its coverage of the auth host made the issuer's host an acceptable resource.
    made = await http.post(
        PROXIES, json={"hostname": "*.test.localhost", "target_url": "http://127.0.0.1:9"}, headers=ADMIN
    )
    assert made.status_code == 201, made.text
    protected = await http.put(
        "/api/v1/proxy/targets/*.test.localhost/auth", json={"allowed_users": ["*"]}, headers=ADMIN
    )
    assert protected.status_code == 200, protected.text
    client = await register(http)
    target = cp.url if resource == "ISSUER" else resource
    response = await Browser(http).get(authorize_url(client, verifier="v" * 43, resource=target))
    assert response.status_code == 302, response.text
    redirect = query_of(response.headers["location"])
    assert redirect["error"] == "invalid_target", redirect
    assert "authorization server itself" in redirect["error_description"]


async def test_the_management_api_takes_oauth_tokens_only_from_the_cli_client(
    http: httpx.AsyncClient, cp: RunningControlPlane, redis_client: aioredis.Redis
) -> None:
    # alice is in ADMIN_GITHUB_USERS; the token below is what an approved DCR client would have held.
    signer = await active_signing_keys(cp, http, redis_client)
    client = await register(http)
    stolen = management_token(cp, signer, client_id=client.client_id, login="alice")
    response = await http.get("/api/v1/tokens/", headers=bearer(stolen))
    assert response.status_code == 401, response.text
    created = await http.post("/api/v1/tokens/", json={"name": "backdoor"}, headers=bearer(stolen))
    assert created.status_code == 401
    # The same login through the built-in CLI client (`mhp oauth login`) is the admin, as documented.
    cli = management_token(cp, signer, client_id=CLI_CLIENT_ID, login="alice")
    assert (await http.get("/api/v1/tokens/", headers=bearer(cli))).status_code == 200


async def test_the_token_endpoint_never_mints_an_issuer_audience_for_another_client(
    http: httpx.AsyncClient, cp: RunningControlPlane, redis_client: aioredis.Redis
) -> None:
    """A code and a refresh token bound to the issuer, as they could sit in Redis from before /authorize
    refused such resources: redeeming either gets invalid_target, not a management credential."""
    state = OAuthState(redis_client)
    client = await register(http)
    alice = UserIdentity(sub="github:1001", login="alice")
    verifier = new_verifier()
    code = secrets.token_urlsafe(32)
    await state.put_code(
        token_sha256(code),
        AuthorizationCode(
            client_id=client.client_id,
            redirect_uri=REDIRECT_URI,
            code_challenge=s256(verifier),
            scope="mcp",
            resources=[cp.url],
            user=alice,
        ),
        60,
    )
    redeemed = await redeem(http, client, LoginResult(code, {}, verifier))
    assert redeemed.status_code == 400, redeemed.text
    assert redeemed.json()["error"] == "invalid_target"
    assert "authorization server itself" in redeemed.json()["error_description"]

    grant = OAuthGrant(
        family_id="legacy", client_id=client.client_id, scope="mcp", resources=[cp.url], user=alice
    )
    await state.put_grant(grant, 600)
    refresh_token = "mhr_" + secrets.token_urlsafe(32)
    await state.put_refresh(
        token_sha256(refresh_token), RefreshRecord(family_id="legacy", client_id=client.client_id), 600
    )
    refreshed = await refresh(http, client, refresh_token)
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_target", refreshed.text
