"""Settings variants run in-process (the real app and lifespan over ASGI, the real test Redis, the GitHub
stand-in on its real socket): a refresh retried inside the grace window, an issuer with a path, and a
server without a KEK (where it would keep its signing keys) or with an unusable key to import."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI
from jose import jwt

from control_plane.app import create_app
from control_plane.oauth.signing import SigningKeys
from shared import keys
from shared.config import Settings, load_settings
from shared.encryption import new_key_b64
from shared.secrets import token_sha256
from tests.control_plane.conftest import ADMIN
from tests.harness.services import RedisServer

from .conftest import RESOURCE, new_rsa_pem, protect
from .github_fake import GitHubFake
from .oauth_flow import Browser, login, redeem, refresh, register

pytestmark = pytest.mark.auth


class AppClient(httpx.AsyncClient):
    """An httpx client bound to an in-process app; `app` gives tests its runtime."""

    app: FastAPI


AppFactory = Callable[..., AbstractAsyncContextManager[AppClient]]


@pytest.fixture
def app_with(
    redis_server: RedisServer, redis_client: aioredis.Redis, github: GitHubFake, signing_key_b64: str
) -> AppFactory:
    github.next_login = "alice"

    @asynccontextmanager
    async def start(**overrides: object) -> AsyncIterator[AppClient]:
        values: dict[str, object] = {
            "REDIS_URL": redis_server.url,
            "REDIS_PASSWORD": redis_server.password,
            "ADMIN_TOKEN": ADMIN["Authorization"].split(" ", 1)[1],
            "BASE_DOMAIN": "test.localhost",
            "OAUTH_ISSUER": "http://cp.test",
            "OAUTH_JWT_PRIVATE_KEY_B64": signing_key_b64,
            "KEY_ENCRYPTION_KEY_B64": new_key_b64(),
            "ACME_WORKER_ENABLED": False,  # with a KEK it would start, and take seconds to stop
            **github.settings_env(),
        }
        values.update(overrides)
        settings: Settings = load_settings(**values)
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with AppClient(transport=transport, base_url="http://cp.test") as client:
                client.app = app
                yield client

    return start


async def test_refresh_retry_within_grace_keeps_the_family(app_with: AppFactory) -> None:
    async with app_with(OAUTH_REFRESH_GRACE_SECONDS=600) as http:
        await protect(http)
        client = await register(http)
        first = (await redeem(http, client, await login(Browser(http), client, resource=RESOURCE))).json()
        second = await refresh(http, client, first["refresh_token"])
        retried = await refresh(http, client, first["refresh_token"])  # the client lost the first answer
        assert second.status_code == 200 and retried.status_code == 200
        assert retried.json()["refresh_token"] != second.json()["refresh_token"]
        # Both branches of the family stay usable; nothing was revoked.
        for tokens in (second.json(), retried.json()):
            response = await http.post("/introspect", data={"token": tokens["access_token"]}, headers=ADMIN)
            assert response.json()["active"] is True
        assert (await refresh(http, client, retried.json()["refresh_token"])).status_code == 200


async def test_issuer_with_a_path(app_with: AppFactory) -> None:
    async with app_with(OAUTH_ISSUER="http://cp.test/tenant") as http:
        for path in (
            "/.well-known/oauth-authorization-server/tenant",
            "/.well-known/openid-configuration/tenant",
            "/tenant/.well-known/openid-configuration",
            "/.well-known/oauth-authorization-server",
        ):
            response = await http.get(path)
            assert response.status_code == 200, path
            assert response.json()["issuer"] == "http://cp.test/tenant"
            assert response.json()["token_endpoint"] == "http://cp.test/tenant/token"
        # The endpoints answer under the issuer's path.
        response = await http.post(
            "/tenant/token", data={"grant_type": "authorization_code", "client_id": "x"}
        )
        assert response.status_code == 401 and response.json()["error"] == "invalid_client"


async def test_without_a_kek_token_endpoints_say_what_is_missing(app_with: AppFactory) -> None:
    """The signing keys are stored encrypted with the KEK; with none the server refuses to store them in
    plaintext and says which setting is missing (no signing key in the environment is needed any more)."""
    async with app_with(KEY_ENCRYPTION_KEY_B64="", OAUTH_JWT_PRIVATE_KEY_B64="") as http:
        assert (await http.get("/.well-known/oauth-authorization-server")).status_code == 200
        response = await http.post("/token", data={"grant_type": "authorization_code", "client_id": "x"})
        assert response.status_code == 503
        assert "KEY_ENCRYPTION_KEY_B64" in response.json()["error_description"]
        assert (await http.get("/jwks.json")).status_code == 503
        for path in ("/device/code", "/device/token"):
            response = await http.post(path, data={"client_id": "mhp-cli"})
            assert response.status_code == 503 and "KEY_ENCRYPTION_KEY_B64" in response.text


async def test_garbage_signing_key_does_not_stop_the_control_plane(app_with: AppFactory) -> None:
    async with app_with(OAUTH_JWT_PRIVATE_KEY_B64="bm90IGEga2V5") as http:
        assert (await http.get("/health")).status_code == 200
        response = await http.get("/jwks.json")
        assert response.status_code == 503 and "PEM" in response.json()["error_description"]


async def test_api_login_accepts_only_api_tokens(app_with: AppFactory, github: GitHubFake) -> None:
    """`mhp oauth login` tokens (aud = issuer) name their GitHub login; resource tokens and revoked ones
    do not. (Wiring this into principal.authenticate is left to the API's owner.)"""
    from control_plane.oauth.server import CLI_CLIENT_ID

    async with app_with() as http:
        runtime = http.app.state.runtime
        start = await http.post("/device/code", data={"client_id": CLI_CLIENT_ID})
        github.approve_device(start.json()["user_code"], "alice")
        poll = {
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
            "device_code": start.json()["device_code"],
            "client_id": CLI_CLIENT_ID,
        }
        tokens = (await http.post("/device/token", data=poll)).json()
        assert await runtime.oauth.api_login(tokens["access_token"]) == "alice"
        # The device code is single-use.
        assert (await http.post("/device/token", data=poll)).json()["error"] == "expired_token"
        # A token for a protected resource is not an API token.
        await protect(http)
        client = await register(http)
        resource_tokens = (
            await redeem(http, client, await login(Browser(http), client, resource=RESOURCE))
        ).json()
        assert await runtime.oauth.api_login(resource_tokens["access_token"]) is None
        assert await runtime.oauth.api_login("acm_not-a-jwt") is None
        # Revoked: refused.
        await http.post("/revoke", data={"token": tokens["access_token"], "client_id": CLI_CLIENT_ID})
        assert await runtime.oauth.api_login(tokens["access_token"]) is None


async def test_an_environment_signing_key_is_imported_once_and_stored_encrypted(
    app_with: AppFactory, signing_key_b64: str, redis_client: aioredis.Redis
) -> None:
    """OAUTH_JWT_PRIVATE_KEY_B64 (deployments that kept the key in .env) seeds an empty Redis; from then on
    the ring in Redis is the authority. A replica with another KEK cannot read the ring and says so; it
    never replaces it."""
    imported = SigningKeys.load(signing_key_b64).kid
    kek = new_key_b64()
    async with app_with(KEY_ENCRYPTION_KEY_B64=kek) as http:
        assert [key["kid"] for key in (await http.get("/jwks.json")).json()["keys"]] == [imported]
    stored = await redis_client.get(keys.oauth_signing_keys())
    assert "mhp-enc:v1:" in stored and "PRIVATE KEY" not in stored and signing_key_b64[:40] not in stored
    other = base64.b64encode(new_rsa_pem()).decode()
    async with app_with(KEY_ENCRYPTION_KEY_B64=kek, OAUTH_JWT_PRIVATE_KEY_B64=other) as http:
        assert [key["kid"] for key in (await http.get("/jwks.json")).json()["keys"]] == [imported]
    async with app_with(KEY_ENCRYPTION_KEY_B64=new_key_b64()) as http:
        response = await http.get("/jwks.json")
        assert response.status_code == 503 and "KEY_ENCRYPTION" in response.json()["error_description"]
    assert await redis_client.get(keys.oauth_signing_keys()) == stored


async def test_code_and_token_lifetimes_follow_the_settings(
    app_with: AppFactory, redis_client: aioredis.Redis
) -> None:
    """OAUTH_CODE_TTL_SECONDS bounds how long a code lives in Redis; OAUTH_ACCESS_TOKEN_TTL_SECONDS is both
    `expires_in` and exp - iat of the access token, on the first token and on every refresh. Values other
    than the defaults, so a constant in the code cannot pass for the setting."""
    async with app_with(OAUTH_CODE_TTL_SECONDS=7, OAUTH_ACCESS_TOKEN_TTL_SECONDS=123) as http:
        await protect(http)
        client = await register(http)
        result = await login(Browser(http), client, resource=RESOURCE)
        assert 0 < await redis_client.ttl(keys.oauth_code(token_sha256(result.code))) <= 7
        first = await redeem(http, client, result)
        assert first.status_code == 200, first.text
        refreshed = await refresh(http, client, first.json()["refresh_token"])
        assert refreshed.status_code == 200, refreshed.text
        for body in (first.json(), refreshed.json()):
            assert body["expires_in"] == 123
            claims = jwt.get_unverified_claims(body["access_token"])
            assert claims["exp"] - claims["iat"] == 123
