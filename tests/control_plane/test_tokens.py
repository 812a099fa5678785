"""API tokens: lifecycle, ownership, every error code, and no plaintext secret anywhere in Redis."""

from __future__ import annotations

import httpx
import pytest
import redis.asyncio as aioredis

from shared import keys
from shared.secrets import token_sha256
from tests.harness.redis_dump import dump_redis

from .conftest import ADMIN, ADMIN_TOKEN, bearer, create_token

TOKENS = "/api/v1/tokens/"


async def test_token_lifecycle(api: httpx.AsyncClient, redis_client: aioredis.Redis) -> None:
    created = await api.post(TOKENS, json={"name": "alice", "cert_email": "alice@example.com"}, headers=ADMIN)
    assert created.status_code == 201
    body = created.json()
    secret = body["token"]
    assert secret.startswith("acm_") and len(secret) >= 4 + 43
    assert body["name"] == "alice" and body["created_by"] == "admin"
    assert await redis_client.hget(keys.token_hashes(), token_sha256(secret)) == "alice"

    listing = (await api.get(TOKENS, headers=ADMIN)).json()
    assert [t["name"] for t in listing] == ["alice"]
    assert set(listing[0]) == {"name", "cert_email", "zones", "grants", "created_at", "created_by"}

    shown = await api.get(f"{TOKENS}alice", headers=ADMIN)
    assert shown.status_code == 200 and shown.json()["cert_email"] == "alice@example.com"
    assert "token" not in shown.json()

    updated = await api.put(f"{TOKENS}alice", json={"cert_email": "ops@example.com"}, headers=ADMIN)
    assert updated.status_code == 200 and updated.json()["cert_email"] == "ops@example.com"
    assert (await api.get(f"{TOKENS}alice", headers=ADMIN)).json()["cert_email"] == "ops@example.com"

    # The new token authenticates as itself.
    assert (await api.get(f"{TOKENS}alice", headers=bearer(secret))).status_code == 200

    deleted = await api.delete(f"{TOKENS}alice", headers=ADMIN)
    assert deleted.status_code == 204
    assert (await api.get(f"{TOKENS}alice", headers=ADMIN)).status_code == 404
    assert await redis_client.hlen(keys.token_hashes()) == 0
    # A deleted token no longer authenticates.
    revoked = await api.get(TOKENS, headers=bearer(secret))
    assert revoked.status_code == 401
    assert revoked.headers["www-authenticate"].startswith("Bearer")


async def test_ordinary_token_sees_and_updates_only_itself(api: httpx.AsyncClient) -> None:
    alice = await create_token(api, "alice")
    await create_token(api, "bob")

    mine = await api.get(TOKENS, headers=bearer(alice))
    assert [t["name"] for t in mine.json()] == ["alice"]
    assert (await api.get(f"{TOKENS}bob", headers=bearer(alice))).status_code == 403
    assert (
        await api.put(f"{TOKENS}bob", json={"cert_email": "x@example.com"}, headers=bearer(alice))
    ).status_code == 403
    own_update = await api.put(f"{TOKENS}alice", json={"cert_email": "a@example.com"}, headers=bearer(alice))
    assert own_update.status_code == 200

    # Only the admin creates and deletes tokens.
    create = await api.post(TOKENS, json={"name": "carol"}, headers=bearer(alice))
    assert create.status_code == 403
    assert (await api.delete(f"{TOKENS}bob", headers=bearer(alice))).status_code == 403
    assert (await api.delete(f"{TOKENS}alice", headers=bearer(alice))).status_code == 403
    assert sorted(t["name"] for t in (await api.get(TOKENS, headers=ADMIN)).json()) == ["alice", "bob"]


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({}, None),
        ({"Authorization": "Basic YWRtaW46YWRtaW4="}, None),
        ({"Authorization": "Bearer"}, None),
        ({"Authorization": "Bearer acm_wrong"}, "invalid_token"),
        ({"Authorization": f"Bearer {ADMIN_TOKEN}x"}, "invalid_token"),
    ],
)
async def test_missing_or_invalid_token_is_401_with_challenge(
    api: httpx.AsyncClient, headers: dict[str, str], error: str | None
) -> None:
    for method, path in [
        ("GET", TOKENS),
        ("POST", TOKENS),
        ("GET", "/api/v1/proxy/targets/"),
        ("DELETE", "/api/v1/routes/x"),
    ]:
        response = await api.request(method, path, headers=headers, json={"name": "x"})
        assert response.status_code == 401, (method, path)
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith("Bearer")
        assert (error in challenge) if error else ("error=" not in challenge)


async def test_auth_is_checked_before_the_payload(api: httpx.AsyncClient) -> None:
    # An unauthenticated caller learns nothing about validation rules: 401, not 422.
    response = await api.post(TOKENS, json={"name": "bad name", "extra": 1})
    assert response.status_code == 401


async def test_unknown_token_is_404(api: httpx.AsyncClient) -> None:
    for method in ("GET", "DELETE"):
        response = await api.request(method, f"{TOKENS}nobody", headers=ADMIN)
        assert response.status_code == 404
        assert "nobody" in response.json()["detail"]
    put = await api.put(f"{TOKENS}nobody", json={"cert_email": ""}, headers=ADMIN)
    assert put.status_code == 404


async def test_duplicate_name_is_409_and_keeps_the_first(api: httpx.AsyncClient) -> None:
    first = await create_token(api, "alice")
    again = await api.post(TOKENS, json={"name": "alice"}, headers=ADMIN)
    assert again.status_code == 409
    assert "alice" in again.json()["detail"]
    # The original secret still works: the failed create changed nothing.
    assert (await api.get(f"{TOKENS}alice", headers=bearer(first))).status_code == 200


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "has space"}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"name": "admin"}, "name"),
        ({"name": "ok", "cert_email": "not-an-email"}, "cert_email"),
        ({"name": "ok", "owner": "someone"}, "owner"),
        ({"name": 7}, "name"),
    ],
)
async def test_invalid_payload_is_422_naming_the_field(
    api: httpx.AsyncClient, payload: dict[str, object], field: str
) -> None:
    response = await api.post(TOKENS, json=payload, headers=ADMIN)
    assert response.status_code == 422
    assert any(field in error["loc"] for error in response.json()["detail"])
    assert (await api.get(TOKENS, headers=ADMIN)).json() == []


async def test_put_with_bad_email_is_422(api: httpx.AsyncClient) -> None:
    await create_token(api, "alice", "a@example.com")
    response = await api.put(f"{TOKENS}alice", json={"cert_email": "nope"}, headers=ADMIN)
    assert response.status_code == 422
    assert any("cert_email" in error["loc"] for error in response.json()["detail"])
    assert (await api.get(f"{TOKENS}alice", headers=ADMIN)).json()["cert_email"] == "a@example.com"


async def test_no_plaintext_token_anywhere_in_redis(
    api: httpx.AsyncClient, redis_client: aioredis.Redis
) -> None:
    secrets = [await create_token(api, f"user{i}", f"u{i}@example.com") for i in range(3)]
    alice_proxy = await api.post(
        "/api/v1/proxy/targets/",
        json={"hostname": "a.example.com", "target_url": "http://127.0.0.1:9"},
        headers=bearer(secrets[0]),
    )
    assert alice_proxy.status_code == 201
    await api.delete(f"{TOKENS}user2", headers=ADMIN)

    blob = await dump_redis(redis_client)
    assert token_sha256(secrets[0]) in blob  # the scan does see the stored material
    for secret in secrets:
        assert secret not in blob
        assert secret.removeprefix("acm_") not in blob
    assert ADMIN_TOKEN not in blob
