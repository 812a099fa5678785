"""The change audit over the real app and Redis: every management-API write is one entry (who, what, a masked
diff, when, from where), refused writes record nothing, tenants see only entries about what they own, and
`/api/v1/logs/audit/` filters, pages newest first and refuses bad input with 422."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from control_plane.app import create_app
from shared import keys
from shared.config import Settings
from shared.encryption import new_key_b64

from .conftest import ADMIN, bearer, create_token

PROXIES = "/api/v1/proxy/targets/"
AUDIT = "/api/v1/logs/audit/"
PUBLIC_TARGET = "https://93.184.215.14"


async def entries(api: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    response = await api.get(AUDIT, params=params, headers=headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_each_write_is_one_entry_with_who_what_and_a_diff(api: httpx.AsyncClient) -> None:
    body = {"hostname": "a.example.com", "target_url": "http://127.0.0.1:9", "enable_https": False}
    assert (await api.post(PROXIES, json=body, headers=ADMIN)).status_code == 201
    patch = {"read_timeout_seconds": 120, "request_headers_set": {"X-Team": "blue"}}
    assert (await api.patch(PROXIES + "a.example.com", json=patch, headers=ADMIN)).status_code == 200
    assert (await api.delete(PROXIES + "a.example.com", headers=ADMIN)).status_code == 204

    found = await entries(api, ADMIN, kind="proxy", name="a.example.com")
    assert [e["action"] for e in found] == ["deleted", "updated", "created"]  # newest first
    deleted, updated, created = found
    for entry in found:
        assert entry["actor"] == "admin"
        assert entry["owner"] == "admin"
        assert entry["client_address"] == "127.0.0.1"
        assert entry["path"].startswith(PROXIES)
    assert updated["method"] == "PATCH"
    assert updated["diff"]["read_timeout_seconds"] == {"old": 60.0, "new": 120.0}
    assert updated["diff"]["request_headers_set.X-Team"] == {"old": None, "new": "blue"}
    assert "updated_at" not in updated["diff"]
    assert created["diff"]["target_url"] == {"old": None, "new": "http://127.0.0.1:9"}
    assert deleted["diff"]["target_url"] == {"old": "http://127.0.0.1:9", "new": None}
    assert created["at"] <= updated["at"] <= deleted["at"]
    assert all(path and not path.startswith(".") for e in found for path in e["diff"])


async def test_refused_writes_record_nothing(api: httpx.AsyncClient, redis_client: aioredis.Redis) -> None:
    body = {"hostname": "b.example.com", "target_url": "http://127.0.0.1:9", "enable_https": False}
    assert (await api.post(PROXIES, json=body, headers=ADMIN)).status_code == 201
    before = await redis_client.xlen(keys.audit_changes_stream())
    assert (await api.post(PROXIES, json=body, headers=ADMIN)).status_code == 409
    bad = await api.patch(PROXIES + "b.example.com", json={"read_timeout_seconds": "soon"}, headers=ADMIN)
    assert bad.status_code == 422
    stale = await api.patch(
        PROXIES + "b.example.com", json={"enabled": False}, headers={**ADMIN, "If-Match": '"0"'}
    )
    assert stale.status_code == 412
    tenant = bearer(await create_token(api, "nosy"))
    after_token = await redis_client.xlen(keys.audit_changes_stream())
    assert after_token == before + 1  # the token creation itself
    assert (await api.delete(PROXIES + "b.example.com", headers=tenant)).status_code == 403
    assert (
        await api.get(PROXIES + "b.example.com", headers=ADMIN)
    ).status_code == 200  # reads are not audited
    assert await redis_client.xlen(keys.audit_changes_stream()) == after_token


async def test_tenants_see_only_entries_about_what_they_own(api: httpx.AsyncClient) -> None:
    alice = bearer(await create_token(api, "alice"))
    bob = bearer(await create_token(api, "bob"))
    for headers, host in ((alice, "alice.example.com"), (bob, "bob.example.com")):
        body = {"hostname": host, "target_url": PUBLIC_TARGET, "enable_https": False}
        assert (await api.post(PROXIES, json=body, headers=headers)).status_code == 201
    assert (
        await api.put("/api/v1/tokens/alice", json={"cert_email": "a@example.com"}, headers=alice)
    ).status_code == 200
    admin_proxy = {"hostname": "admin.example.com", "target_url": "http://127.0.0.1:9", "enable_https": False}
    assert (await api.post(PROXIES, json=admin_proxy, headers=ADMIN)).status_code == 201

    seen_by_alice = await entries(api, alice)
    assert {(e["kind"], e["name"]) for e in seen_by_alice} == {
        ("proxy", "alice.example.com"),
        ("token", "alice"),  # its own token record: created by the admin, updated by itself
    }
    assert {e["actor"] for e in seen_by_alice if e["kind"] == "proxy"} == {"alice"}
    assert {(e["kind"], e["name"]) for e in await entries(api, bob)} == {
        ("proxy", "bob.example.com"),
        ("token", "bob"),
    }
    everything = {(e["kind"], e["name"]) for e in await entries(api, ADMIN)}
    assert {
        ("proxy", "alice.example.com"),
        ("proxy", "bob.example.com"),
        ("proxy", "admin.example.com"),
    } <= everything
    # A tenant's filter cannot widen what it sees.
    assert await entries(api, alice, name="bob.example.com") == []
    assert await entries(api, alice, actor="admin", kind="proxy") == []
    assert (await api.get(AUDIT)).status_code == 401


async def test_filters_and_cursor_pagination(api: httpx.AsyncClient) -> None:
    for i in range(7):
        body = {"id": f"r-{i}", "path_pattern": f"/p{i}", "target_url": "http://127.0.0.1:9"}
        assert (await api.post("/api/v1/routes/", json=body, headers=ADMIN)).status_code == 201
    assert (await api.delete("/api/v1/routes/r-3", headers=ADMIN)).status_code == 204
    pages: list[list[str]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"kind": "route", "action": "created", "limit": 3}
        if cursor:
            params["cursor"] = cursor
        body = (await api.get(AUDIT, params=params, headers=ADMIN)).json()
        pages.append([e["name"] for e in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    flat = [name for page in pages for name in page]
    assert flat == [f"r-{i}" for i in reversed(range(7))]
    assert all(len(page) <= 3 for page in pages)
    assert [e["name"] for e in await entries(api, ADMIN, action="deleted")] == ["r-3"]
    assert await entries(api, ADMIN, kind="route", since="1h")
    assert await entries(api, ADMIN, kind="route", until="2000-01-01T00:00:00") == []
    assert await entries(api, ADMIN, kind="route", since="4102444800") == []  # the year 2100


async def test_bad_queries_are_422(api: httpx.AsyncClient) -> None:
    for params in (
        {"since": "yesterday"},
        {"until": "12x"},
        {"cursor": "not-a-cursor"},
        {"cursor": "1-2-3"},
        {"limit": "0"},
        {"limit": "501"},
    ):
        response = await api.get(AUDIT, params=params, headers=ADMIN)
        assert response.status_code == 422, (params, response.text)


@pytest.fixture
async def api_with_kek(settings: Settings, redis_client: aioredis.Redis) -> AsyncIterator[httpx.AsyncClient]:
    """The app with a key-encryption key, so per-proxy GitHub app secrets can be stored."""
    app = create_app(
        settings.model_copy(update={"KEY_ENCRYPTION_KEY_B64": new_key_b64(), "ACME_WORKER_ENABLED": False})
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://control-plane.test") as client:
            yield client


async def test_secrets_never_reach_an_entry(
    api_with_kek: httpx.AsyncClient, redis_client: aioredis.Redis
) -> None:
    api = api_with_kek
    secret_header = "Bearer upstream-secret-4f1c9a"
    created = (await api.post("/api/v1/tokens/", json={"name": "carol"}, headers=ADMIN)).json()
    carol_token = created["token"]
    body = {
        "hostname": "s.example.com",
        "target_url": "http://127.0.0.1:9",
        "enable_https": False,
        "request_headers_set": {"Authorization": secret_header, "X-Api-Key": "key-value-77aa"},
    }
    assert (await api.post(PROXIES, json=body, headers=ADMIN)).status_code == 201
    auth = {
        "allowed_users": ["alice"],
        "github_client_id": "Iv1.abc",
        "github_client_secret": "gh-app-secret-9d8e",
    }
    put = await api.put(PROXIES + "s.example.com/auth", json=auth, headers=ADMIN)
    assert put.status_code == 200, put.text
    rotated = {k: v for k, v in body.items() if k != "hostname"}
    rotated["request_headers_set"] = {"Authorization": "Bearer second-secret-0b0b"}
    assert (await api.put(PROXIES + "s.example.com", json=rotated, headers=ADMIN)).status_code == 200
    assert (await api.delete("/api/v1/tokens/carol", headers=ADMIN)).status_code == 204

    raw = json.dumps(await redis_client.xrange(keys.audit_changes_stream()))
    for secret in (
        carol_token,
        secret_header,
        "upstream-secret-4f1c9a",
        "key-value-77aa",
        "gh-app-secret-9d8e",
        "second-secret-0b0b",
        "acm_test-admin-token",
    ):
        assert secret not in raw, secret
    stored_hash = "token_sha256"
    assert all(
        stored_hash not in e["diff"] or e["diff"][stored_hash]["new"] in ("***", None)
        for e in await entries(api, ADMIN)
    )
    updated = (await entries(api, ADMIN, kind="proxy", name="s.example.com", action="updated"))[0]
    # The change is visible, the values are not.
    assert updated["diff"]["request_headers_set.Authorization"] == {"old": "***", "new": "***"}
    auth_entry = (await entries(api, ADMIN, kind="auth", name="s.example.com"))[0]
    assert auth_entry["diff"]["github_client_secret_encrypted"]["new"] == "***"
