"""Audit edges: what masking hides in a stored service (secret environment values, secret-looking names),
and requests refused by a rate limit leave one OAuth audit event per client and minute, with the address
taken from X-Forwarded-For only when the peer is a trusted proxy."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as aioredis

from control_plane.app import create_app
from control_plane.audit.masking import MASK, diff, masked
from shared import keys
from shared.config import Settings

from .conftest import ADMIN


def test_secret_environment_values_and_secret_names_are_masked() -> None:
    old = {
        "name": "notes",
        "spec": {
            "image": "notes:1",
            "environment": {
                "LOG_LEVEL": {"value": "info", "secret": False},
                "DATABASE_URL": {"value": "ciphertext-aaa", "secret": True},
                "GITHUB_TOKEN": {"value": "plain-bbb", "secret": False},
            },
        },
        "owner": "alice",
    }
    new = json.loads(json.dumps(old))
    new["spec"]["environment"]["LOG_LEVEL"]["value"] = "debug"
    new["spec"]["environment"]["DATABASE_URL"]["value"] = "ciphertext-ccc"
    new["spec"]["image"] = "notes:2"
    changes = diff(json.dumps(old), json.dumps(new))
    assert changes["spec.image"].new == "notes:2"
    assert changes["spec.environment.LOG_LEVEL.value"].old == "info"
    assert changes["spec.environment.DATABASE_URL.value"].model_dump() == {"old": MASK, "new": MASK}
    text = json.dumps({k: v.model_dump() for k, v in changes.items()})
    for secret in ("ciphertext-aaa", "ciphertext-ccc", "plain-bbb"):
        assert secret not in text
    assert masked({"Cookie": "a=b", "x_api_key": "k", "password": "p", "code": "c", "plain": "ok"}) == {
        "Cookie": MASK,
        "x_api_key": MASK,
        "password": MASK,
        "code": MASK,
        "plain": "ok",
    }
    created = diff(None, json.dumps({"private_key_encrypted": "zzz", "domains": ["a.example"]}))
    assert created["private_key_encrypted"].new == MASK and created["domains"].new == ["a.example"]


@pytest.fixture
async def limited_api(settings: Settings, redis_client: aioredis.Redis) -> AsyncIterator[httpx.AsyncClient]:
    # A fresh Settings (not model_copy: derived values such as the trusted networks are cached).
    tight = Settings(**{**settings.model_dump(), "RATE_LIMIT_TOKEN": 2, "TRUSTED_PROXY_CIDRS": "127.0.0.0/8"})
    app = create_app(tight)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://control-plane.test") as client:
            yield client


async def test_rate_limited_requests_are_audited_once_per_client_and_minute(
    limited_api: httpx.AsyncClient, redis_client: aioredis.Redis
) -> None:
    forwarded = {"X-Forwarded-For": "203.0.113.7"}
    statuses = [(await limited_api.post("/token", data={}, headers=forwarded)).status_code for _ in range(6)]
    assert statuses[-1] == 429
    other = {"X-Forwarded-For": "198.51.100.9"}
    statuses = [(await limited_api.post("/token", data={}, headers=other)).status_code for _ in range(4)]
    assert statuses[-1] == 429
    page = (
        await limited_api.get("/api/v1/logs/oauth/", params={"event": "rate_limited"}, headers=ADMIN)
    ).json()
    addresses = [e["client_address"] for e in page["items"]]
    assert addresses == ["198.51.100.9", "203.0.113.7"]
    assert all(e["outcome"] == "failure" and "/token" in e["reason"] for e in page["items"])
    assert await redis_client.xlen(keys.audit_oauth_stream()) == 2


async def test_the_streams_are_bounded_by_age_and_by_count(redis_client: aioredis.Redis) -> None:
    # Trimming is approximate (whole stream nodes of 100 entries), as it should be at scale: a test of it
    # needs a few hundred entries.
    import asyncio

    from control_plane.audit.streams import AuditStream

    aged = AuditStream("{mhp}:audit:test-aged", retention_seconds=0.05, max_entries=0)
    for i in range(300):
        await aged.add(redis_client, json.dumps({"i": i}))
    await asyncio.sleep(0.1)
    await aged.add(redis_client, json.dumps({"i": "last"}))
    remaining = await redis_client.xlen(aged.key)
    assert remaining < 150, remaining
    newest = await redis_client.xrevrange(aged.key, count=1)
    assert json.loads(newest[0][1]["e"]) == {"i": "last"}

    counted = AuditStream("{mhp}:audit:test-counted", retention_seconds=86400, max_entries=100)
    for i in range(450):
        await counted.add(redis_client, json.dumps({"i": i}))
    assert 100 <= await redis_client.xlen(counted.key) < 250
