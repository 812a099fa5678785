"""`/api/v1/proxy/targets/`: CRUD, hostname rules, PATCH vs PUT, ownership."""

from __future__ import annotations

import httpx
import pytest
import redis.asyncio as aioredis

from shared import keys
from shared.models import ProxyTarget

from .conftest import ADMIN, bearer, create_token

PROXIES = "/api/v1/proxy/targets/"


async def test_proxy_lifecycle(api: httpx.AsyncClient, redis_client: aioredis.Redis) -> None:
    created = await api.post(
        PROXIES,
        json={
            "proxy_hostname": "Bücher.Example.",
            "target_url": "https://127.0.0.1:8443",
            "verify_upstream_tls": False,
            "request_headers_set": {"X-Env": "test"},
            "response_headers_remove": ["Server"],
            "read_timeout_seconds": 5,
        },
        headers=ADMIN,
    )
    assert created.status_code == 201, created.text
    proxy = created.json()
    assert proxy["hostname"] == "xn--bcher-kva.example"
    assert proxy["owner"] == "admin"
    stored = ProxyTarget.model_validate_json(await redis_client.hget(keys.proxies(), "xn--bcher-kva.example"))
    assert stored.request_headers_set == {"X-Env": "test"} and stored.verify_upstream_tls is False

    # Lookups accept the name as typed (Unicode, upper case) and as stored.
    assert (await api.get(f"{PROXIES}Bücher.example", headers=ADMIN)).json()[
        "hostname"
    ] == "xn--bcher-kva.example"
    assert [p["hostname"] for p in (await api.get(PROXIES, headers=ADMIN)).json()] == [
        "xn--bcher-kva.example"
    ]

    patched = await api.patch(f"{PROXIES}xn--bcher-kva.example", json={"enabled": False}, headers=ADMIN)
    assert patched.status_code == 200
    assert patched.json()["enabled"] is False
    assert patched.json()["request_headers_set"] == {"X-Env": "test"}  # PATCH keeps the rest
    assert patched.json()["created_at"] == proxy["created_at"]
    assert patched.json()["updated_at"] >= proxy["updated_at"]

    replaced = await api.put(
        f"{PROXIES}xn--bcher-kva.example", json={"target_url": "http://127.0.0.1:8080"}, headers=ADMIN
    )
    assert replaced.status_code == 200
    assert replaced.json()["request_headers_set"] == {}  # PUT resets what it does not name
    assert replaced.json()["enabled"] is True and replaced.json()["target_url"] == "http://127.0.0.1:8080"

    assert (await api.delete(f"{PROXIES}xn--bcher-kva.example", headers=ADMIN)).status_code == 204
    assert (await api.get(f"{PROXIES}xn--bcher-kva.example", headers=ADMIN)).status_code == 404
    assert await redis_client.hlen(keys.proxies()) == 0


async def test_wildcard_proxy_and_duplicate(api: httpx.AsyncClient) -> None:
    created = await api.post(
        PROXIES, json={"hostname": "*.apps.example.com", "target_url": "http://127.0.0.1:1"}, headers=ADMIN
    )
    assert created.status_code == 201
    assert (await api.get(f"{PROXIES}*.apps.example.com", headers=ADMIN)).status_code == 200
    duplicate = await api.post(
        PROXIES, json={"hostname": "*.APPS.example.com.", "target_url": "http://127.0.0.1:2"}, headers=ADMIN
    )
    assert duplicate.status_code == 409


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"hostname": "*.com", "target_url": "http://127.0.0.1:1"}, "hostname"),
        ({"hostname": "a.*.example.com", "target_url": "http://127.0.0.1:1"}, "hostname"),
        ({"hostname": "bad_host.example", "target_url": "http://127.0.0.1:1"}, "hostname"),
        ({"hostname": "a.example.com", "target_url": "ftp://127.0.0.1"}, "target_url"),
        ({"hostname": "a.example.com", "target_url": "http://u:p@127.0.0.1"}, "target_url"),
        ({"hostname": "a.example.com"}, "target_url"),
        ({"target_url": "http://127.0.0.1:1"}, "hostname"),
        ({"hostname": "a.example.com", "target_url": "http://h", "owner": "bob"}, "owner"),
        ({"hostname": "a.example.com", "target_url": "http://h", "route_mode": "some"}, "route_mode"),
        (
            {"hostname": "a.example.com", "target_url": "http://h", "connect_timeout_seconds": 0},
            "connect_timeout_seconds",
        ),
        (
            {"hostname": "a.example.com", "target_url": "http://h", "request_headers_set": {"Bad Name": "x"}},
            "request_headers_set",
        ),
        (
            {"hostname": "a.example.com", "target_url": "http://h", "request_headers_set": {"X-A": "a\r\nb"}},
            "request_headers_set",
        ),
    ],
)
async def test_invalid_proxy_is_422_naming_the_field(
    api: httpx.AsyncClient, payload: dict[str, object], field: str
) -> None:
    response = await api.post(PROXIES, json=payload, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert any(field in error["loc"] for error in response.json()["detail"]), response.json()
    assert (await api.get(PROXIES, headers=ADMIN)).json() == []


async def test_patch_rejects_unknown_and_invalid_fields(api: httpx.AsyncClient) -> None:
    await api.post(
        PROXIES, json={"hostname": "a.example.com", "target_url": "http://127.0.0.1:1"}, headers=ADMIN
    )
    for body, field in [
        ({"owner": "bob"}, "owner"),
        ({"hostname": "b.example.com"}, "hostname"),
        ({"target_url": "gopher://x"}, "target_url"),
        ({"enabled": "maybe"}, "enabled"),
    ]:
        response = await api.patch(f"{PROXIES}a.example.com", json=body, headers=ADMIN)
        assert response.status_code == 422, body
        assert any(field in error["loc"] for error in response.json()["detail"])
    shown = (await api.get(f"{PROXIES}a.example.com", headers=ADMIN)).json()
    assert (
        shown["owner"] == "admin" and shown["enabled"] is True and shown["target_url"] == "http://127.0.0.1:1"
    )
    assert (await api.patch(f"{PROXIES}missing.example.com", json={}, headers=ADMIN)).status_code == 404


async def test_tokens_see_and_change_only_their_own_proxies(api: httpx.AsyncClient) -> None:
    alice = bearer(await create_token(api, "alice"))
    bob = bearer(await create_token(api, "bob"))
    mine = await api.post(
        PROXIES, json={"hostname": "alice.example.com", "target_url": "http://127.0.0.1:1"}, headers=alice
    )
    assert mine.status_code == 201 and mine.json()["owner"] == "alice"
    await api.post(
        PROXIES, json={"hostname": "admin.example.com", "target_url": "http://127.0.0.1:1"}, headers=ADMIN
    )

    assert [p["hostname"] for p in (await api.get(PROXIES, headers=alice)).json()] == ["alice.example.com"]
    assert (await api.get(PROXIES, headers=bob)).json() == []
    assert len((await api.get(PROXIES, headers=ADMIN)).json()) == 2

    for method, json in [
        ("GET", None),
        ("PATCH", {"enabled": False}),
        ("PUT", {"target_url": "http://h"}),
        ("DELETE", None),
    ]:
        response = await api.request(method, f"{PROXIES}alice.example.com", json=json, headers=bob)
        assert response.status_code == 403, method
        assert (
            await api.request(method, f"{PROXIES}admin.example.com", json=json, headers=alice)
        ).status_code == 403
    # A hostname is unique across owners.
    taken = await api.post(
        PROXIES, json={"hostname": "alice.example.com", "target_url": "http://h"}, headers=bob
    )
    assert taken.status_code == 409
    # The admin may change anything; the owner stays the creator's.
    patched = await api.patch(f"{PROXIES}alice.example.com", json={"enabled": False}, headers=ADMIN)
    assert patched.json()["owner"] == "alice"
    assert (await api.delete(f"{PROXIES}alice.example.com", headers=alice)).status_code == 204
