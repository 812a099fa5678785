"""Revocation as a data plane sees it: the revoked jti lands in the Redis sorted set and on the pub/sub
channel, and a verifier fed from them (data_plane.auth) refuses the token; the built-in AUTH_HOST proxy and
the JWKS are published by the control plane itself."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import redis.asyncio as aioredis

from data_plane.auth.revocations import RevokedTokens
from data_plane.auth.token_verifier import Allow, Deny, KeySet, TokenRequirements, verify
from shared import keys
from shared.models import ProxyTarget
from tests.control_plane.conftest import RunningControlPlane

from .conftest import RESOURCE, protect
from .oauth_flow import Browser, login, redeem, register

pytestmark = pytest.mark.auth

REVOCATION_DEADLINE_SECONDS = 1.0  # the bound: every replica refuses a revoked token within 1 s


async def test_revoked_token_is_refused_by_a_data_plane_within_a_second(
    http: httpx.AsyncClient, cp: RunningControlPlane, redis_client: aioredis.Redis
) -> None:
    await protect(http)
    client = await register(http)
    tokens = (await redeem(http, client, await login(Browser(http), client, resource=RESOURCE))).json()
    keyset = KeySet.from_jwks((await http.get("/jwks.json")).json())
    requirements = TokenRequirements(
        issuer=cp.url,
        audiences=frozenset({RESOURCE}),
        scopes=("mcp",),
        allowed_users=frozenset({"alice"}),
        allowed_orgs=frozenset(),
    )
    # What a data plane holds: a snapshot of the revoked set, then live updates from the channel.
    revoked = RevokedTokens.from_entries(
        await redis_client.zrange(keys.oauth_revoked_jtis(), 0, -1, withscores=True), now=time.time()
    )
    assert isinstance(
        verify(tokens["access_token"], keyset, requirements, now=time.time(), revoked=revoked), Allow
    )

    pubsub = redis_client.pubsub()
    await pubsub.subscribe(keys.oauth_revocations_channel())
    await pubsub.get_message(timeout=1.0)  # the subscribe confirmation
    response = await http.post(
        "/revoke", data={"token": tokens["access_token"], "client_id": client.client_id}
    )
    assert response.status_code == 200
    revoked_at = time.monotonic()
    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=REVOCATION_DEADLINE_SECONDS)
    assert message is not None, "no revocation message within 1 s"
    assert time.monotonic() - revoked_at <= REVOCATION_DEADLINE_SECONDS
    revoked = revoked.with_message(message["data"], now=time.time())
    decision = verify(tokens["access_token"], keyset, requirements, now=time.time(), revoked=revoked)
    assert isinstance(decision, Deny) and "revoked" in decision.description
    await pubsub.aclose()

    # A replica that missed the message converges from the snapshot.
    snapshot = RevokedTokens.from_entries(
        await redis_client.zrange(keys.oauth_revoked_jtis(), 0, -1, withscores=True), now=time.time()
    )
    assert isinstance(
        verify(tokens["access_token"], keyset, requirements, now=time.time(), revoked=snapshot), Deny
    )


async def test_revoked_set_ignores_junk_and_forgets_expired_tokens() -> None:
    now = 1000.0
    revoked = RevokedTokens.from_entries([("old", 900.0), ("live", 2000.0)], now=now)
    assert "live" in revoked and "old" not in revoked
    assert revoked.with_message("garbage", now=now) is revoked
    assert revoked.with_message("jti notanumber", now=now) is revoked
    later = revoked.with_message("new 3000", now=2500.0)
    assert "new" in later and "live" not in later


async def test_control_plane_publishes_issuer_proxy_and_jwks(
    http: httpx.AsyncClient, cp: RunningControlPlane, redis_client: aioredis.Redis
) -> None:
    cp.service.stop()
    cp.service.start()
    for _ in range(100):  # the upkeep task runs right after startup
        if await redis_client.hget(keys.proxies(), "auth.test.localhost") and await redis_client.get(
            keys.oauth_jwks()
        ):
            break
        await asyncio.sleep(0.05)
    proxy = ProxyTarget.model_validate_json(await redis_client.hget(keys.proxies(), "auth.test.localhost"))
    assert proxy.target_url == f"http://127.0.0.1:{cp.url.rsplit(':', 1)[1]}" and proxy.owner == "admin"
    assert json.loads(await redis_client.get(keys.oauth_jwks())) == (await http.get("/jwks.json")).json()
