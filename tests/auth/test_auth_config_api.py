"""Per-proxy auth config, PRM fields and the resource registry through the management API: stored in their
own hashes, written with the config-write transaction (kind "auth"), owned like the proxy they protect."""

from __future__ import annotations

import httpx
import pytest
import redis.asyncio as aioredis

from shared import keys
from shared.models import ChangeEvent, ProxyAuthConfig
from tests.control_plane.conftest import ADMIN, bearer, create_token

pytestmark = pytest.mark.auth

HOST = "tools.example.com"


async def _proxy(api: httpx.AsyncClient, headers: dict[str, str] = ADMIN, hostname: str = HOST) -> None:
    response = await api.post(
        "/api/v1/proxy/targets/",
        json={"hostname": hostname, "target_url": "http://127.0.0.1:9"},
        headers=headers,
    )
    assert response.status_code == 201, response.text


async def test_put_get_delete_auth(api: httpx.AsyncClient, redis_client: aioredis.Redis) -> None:
    await _proxy(api)
    assert (await api.get(f"/api/v1/proxy/targets/{HOST}/auth", headers=ADMIN)).status_code == 404
    version_before = int(await redis_client.get(keys.config_version()) or 0)
    body = {
        "allowed_users": ["Alice", "bob"],
        "allowed_orgs": ["acme"],
        "public_paths": ["/health"],
        "allowed_origins": ["HTTPS://Claude.AI", "http://localhost:6274"],
        "scope_rules": [{"path_prefix": "/admin", "methods": ["post"], "scopes": ["mcp", "admin"]}],
    }
    response = await api.put(f"/api/v1/proxy/targets/{HOST}/auth", json=body, headers=ADMIN)
    assert response.status_code == 200, response.text
    config = response.json()
    assert config["allowed_users"] == ["alice", "bob"] and config["required_scopes"] == ["mcp"]
    assert config["identity_headers"] == {
        "X-Auth-User": "login",
        "X-Auth-Subject": "sub",
        "X-Auth-Scopes": "scope",
    }
    assert config["scope_rules"][0]["methods"] == ["POST"]
    assert config["allowed_origins"] == ["https://claude.ai", "http://localhost:6274"]
    # Stored in its own hash, not inside the proxy; the config version moved and an "auth" event was written.
    stored = ProxyAuthConfig.model_validate_json(await redis_client.hget(keys.proxy_auth(), HOST))
    assert stored.allowed_orgs == ["acme"]
    assert "allowed_users" not in await redis_client.hget(keys.proxies(), HOST)
    assert int(await redis_client.get(keys.config_version())) == version_before + 1
    [(_id, fields)] = await redis_client.xrevrange(keys.changes_stream(), count=1)
    event = ChangeEvent.from_stream_fields(fields)
    assert (event.kind, event.action, event.name) == ("auth", "created", HOST)

    assert (await api.get(f"/api/v1/proxy/targets/{HOST}/auth", headers=ADMIN)).json()["allowed_users"] == [
        "alice",
        "bob",
    ]
    assert (await api.delete(f"/api/v1/proxy/targets/{HOST}/auth", headers=ADMIN)).status_code == 204
    assert await redis_client.hget(keys.proxy_auth(), HOST) is None
    assert (await api.delete(f"/api/v1/proxy/targets/{HOST}/auth", headers=ADMIN)).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"allowed_users": ["not a login!"]},
        {"public_paths": ["no-slash"]},
        {"allowed_origins": ["https://claude.ai/with/path"]},
        {"identity_headers": {"X-User": "password"}},
        {"identity_headers": {"Bad Header": "login"}},
        {"required_scopes": ["has space"]},
        {"unknown": True},
    ],
)
async def test_bad_auth_config_is_422_and_changes_nothing(
    api: httpx.AsyncClient, redis_client: aioredis.Redis, body: dict[str, object]
) -> None:
    await _proxy(api)
    response = await api.put(f"/api/v1/proxy/targets/{HOST}/auth", json=body, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert await redis_client.hget(keys.proxy_auth(), HOST) is None


async def test_auth_config_of_a_missing_proxy_is_404(api: httpx.AsyncClient) -> None:
    response = await api.put("/api/v1/proxy/targets/nope.example.com/auth", json={}, headers=ADMIN)
    assert response.status_code == 404


async def test_auth_config_follows_proxy_ownership(
    api: httpx.AsyncClient, redis_client: aioredis.Redis
) -> None:
    alice = bearer(await create_token(api, "alice"))
    bob = bearer(await create_token(api, "bob"))
    await _proxy(api, alice)
    assert (await api.put(f"/api/v1/proxy/targets/{HOST}/auth", json={}, headers=bob)).status_code == 403
    response = await api.put(
        f"/api/v1/proxy/targets/{HOST}/auth", json={"allowed_users": ["*"]}, headers=alice
    )
    assert response.status_code == 200 and response.json()["owner"] == "alice"
    assert [e["proxy"] for e in (await api.get("/api/v1/resources/", headers=alice)).json()] == [HOST]
    assert (await api.get("/api/v1/resources/", headers=bob)).json() == []
    # Deleting the token deletes its proxies and their protection.
    assert (await api.delete("/api/v1/tokens/alice", headers=ADMIN)).status_code == 204
    assert await redis_client.hget(keys.proxy_auth(), HOST) is None


async def test_resource_fields_and_registry(api: httpx.AsyncClient) -> None:
    await _proxy(api)
    response = await api.get(f"/api/v1/proxy/targets/{HOST}/resource", headers=ADMIN)
    assert response.status_code == 200 and response.json()["path"] == "/mcp"
    body = {
        "path": "/v1/mcp/",
        "scopes_supported": ["mcp", "read"],
        "resource_name": "Tools",
        "resource_documentation": "https://docs.example.com/tools",
    }
    response = await api.put(f"/api/v1/proxy/targets/{HOST}/resource", json=body, headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json()["path"] == "/v1/mcp"
    # Not protected yet: not in the registry.
    assert (await api.get("/api/v1/resources/", headers=ADMIN)).json() == []
    await api.put(f"/api/v1/proxy/targets/{HOST}/auth", json={"allowed_users": ["alice"]}, headers=ADMIN)
    [entry] = (await api.get("/api/v1/resources/", headers=ADMIN)).json()
    assert entry["resource"] == f"https://{HOST}/v1/mcp" and entry["scopes"] == ["mcp", "read"]
    # Disabled protection drops out of the registry.
    await api.put(f"/api/v1/proxy/targets/{HOST}/auth", json={"enabled": False}, headers=ADMIN)
    assert (await api.get("/api/v1/resources/", headers=ADMIN)).json() == []
    bad = await api.put(f"/api/v1/proxy/targets/{HOST}/resource", json={"path": "no-slash"}, headers=ADMIN)
    assert bad.status_code == 422
