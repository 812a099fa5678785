"""A generic OpenID Connect provider as the upstream identity provider (UPSTREAM_IDENTITY_PROVIDER=oidc),
against a real control plane and a local OIDC stand-in: discovery, the code flow with PKCE and the client
secret, userinfo -> our token's login/groups, refusals (no login claim, issuer mismatch, device flow)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import redis.asyncio as aioredis
from jose import jwt

from control_plane.oauth.github import UpstreamError
from control_plane.oauth.oidc import OidcProvider, OidcSettings, identity_from_claims
from control_plane.oauth.pkce import s256
from tests.control_plane.conftest import RunningControlPlane, start_control_plane
from tests.harness.services import RedisServer, free_port

from .conftest import RESOURCE, oauth_control_plane_env, protect
from .oauth_flow import Browser, login, redeem, register
from .oidc_fake import OidcFake

pytestmark = pytest.mark.auth


@pytest.fixture(scope="module")
def oidc() -> Iterator[OidcFake]:
    fake = OidcFake().start()
    fake.users["u-42"] = {
        "preferred_username": "Dana",
        "email": "dana@example.com",
        "name": "Dana",
        "groups": ["Platform", "ops"],
    }
    fake.users["u-anon"] = {"name": "No login"}
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="module")
def oidc_control_plane(
    redis_server: RedisServer,
    oidc: OidcFake,
    signing_key_b64: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningControlPlane]:
    port = free_port()
    env = oauth_control_plane_env(redis_server, port, signing_key_b64)
    env.update(oidc.settings_env(), BASE_DOMAIN="oidc.test.localhost")
    service = start_control_plane(env, port, tmp_path_factory.mktemp("oidc_control_plane"))
    try:
        yield RunningControlPlane(url=f"http://127.0.0.1:{port}", service=service, env=env)
    finally:
        service.stop()


@pytest.fixture
async def http(
    oidc_control_plane: RunningControlPlane, redis_client: aioredis.Redis
) -> AsyncIterator[httpx.AsyncClient]:
    url = oidc_control_plane.url
    async with httpx.AsyncClient(base_url=url, follow_redirects=False, timeout=20) as client:
        yield client


async def test_oidc_user_signs_in_and_gets_our_token(
    http: httpx.AsyncClient, oidc: OidcFake, oidc_control_plane: RunningControlPlane
) -> None:
    await protect(http, users=["dana"])
    client = await register(http)
    oidc.next_subject = "u-42"
    result = await login(Browser(http), client, resource=RESOURCE)
    assert result.code, result.redirect
    tokens = await redeem(http, client, result)
    assert tokens.status_code == 200, tokens.text
    claims = jwt.get_unverified_claims(tokens.json()["access_token"])
    assert claims["sub"] == "oidc:u-42" and claims["login"] == "dana"
    assert claims["orgs"] == ["platform", "ops"] and claims["email"] == "dana@example.com"

    upstream = oidc.authorize_requests[-1]
    assert upstream["redirect_uri"] == f"{oidc_control_plane.url}/callback"
    assert upstream["code_challenge_method"] == "S256" and len(upstream["code_challenge"]) == 43
    assert "openid" in upstream["scope"].split()
    assert oidc.token_auth_seen[-1] == "client_secret_basic"


async def test_client_secret_post_when_the_provider_has_no_basic_auth(oidc: OidcFake) -> None:
    # A provider's discovery is read once per process, so this uses its own provider on the same fake.
    oidc.basic_auth = False
    try:
        async with httpx.AsyncClient() as outside:
            provider = OidcProvider(_settings(oidc), outside)
            oidc.next_subject = "u-42"
            location = await provider.authorize_url(
                redirect_uri="http://127.0.0.1/cb", state="s", code_challenge=_S256_OF_VERIFIER
            )
            redirected = await outside.get(location)
            code = httpx.URL(redirected.headers["location"]).params["code"]
            token = await provider.exchange_code(
                code=code, redirect_uri="http://127.0.0.1/cb", code_verifier=_VERIFIER
            )
            assert oidc.token_auth_seen[-1] == "client_secret_post"
            assert (await provider.identity(token)).login == "dana"
    finally:
        oidc.basic_auth = True


async def test_refusals(http: httpx.AsyncClient, oidc: OidcFake) -> None:
    await protect(http, users=["dana"])
    client = await register(http)
    oidc.next_subject = "u-anon"  # the provider names no login and no email
    result = await login(Browser(http), client, resource=RESOURCE)
    assert result.redirect["error"] == "access_denied" and "preferred_username" in result.redirect.get(
        "error_description", ""
    )

    device = await http.post("/device/code", data={"client_id": "mhp-cli"})
    assert device.status_code == 400 and device.json()["error"] == "unsupported_grant_type"
    assert "GitHub" in device.json()["error_description"]

    async with httpx.AsyncClient() as outside:
        plain = OidcSettings("http://idp.example", "c", "s", "openid", "preferred_username", "groups")
        with pytest.raises(UpstreamError, match="https"):
            await OidcProvider(plain, outside).authorize_url(
                redirect_uri="http://127.0.0.1/cb", state="s", code_challenge=_S256_OF_VERIFIER
            )

    oidc.issuer_override = "https://someone-else.example"
    try:
        async with httpx.AsyncClient() as outside:
            with pytest.raises(UpstreamError, match="names issuer"):
                await OidcProvider(_settings(oidc), outside).authorize_url(
                    redirect_uri="http://127.0.0.1/cb", state="s", code_challenge=_S256_OF_VERIFIER
                )
    finally:
        oidc.issuer_override = None


def test_identity_from_claims() -> None:
    settings = OidcSettings("https://idp", "c", "s", "openid", "preferred_username", "roles")
    verified = {"sub": "1", "email": "Eve@Example.com", "email_verified": True, "roles": "admin"}
    identity = identity_from_claims(verified, settings)
    assert (identity.login, identity.orgs, identity.sub) == ("eve@example.com", ["admin"], "oidc:1")
    with pytest.raises(UpstreamError, match="verified email"):  # anyone can type an unverified address
        identity_from_claims({**verified, "email_verified": False}, settings)
    with pytest.raises(UpstreamError):
        identity_from_claims({"email": "x@example.com"}, settings)  # no subject


_VERIFIER = "v" * 43
_S256_OF_VERIFIER = s256(_VERIFIER)


def _settings(fake: OidcFake) -> OidcSettings:
    return OidcSettings(
        fake.url, fake.client_id, fake.client_secret, "openid", "preferred_username", "groups"
    )
