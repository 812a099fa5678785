"""`/api/v1/routes/`: CRUD, evaluation order, regex and reference checks, ownership."""

from __future__ import annotations

import httpx
import pytest
import redis.asyncio as aioredis

from shared import keys
from shared.models import Route

from .conftest import ADMIN, bearer, create_token

ROUTES = "/api/v1/routes/"
PROXIES = "/api/v1/proxy/targets/"


async def test_route_lifecycle_and_order(api: httpx.AsyncClient, redis_client: aioredis.Redis) -> None:
    await api.post(
        PROXIES, json={"hostname": "api.example.com", "target_url": "http://127.0.0.1:7000"}, headers=ADMIN
    )
    specs = [
        {"id": "low", "path_pattern": "/", "priority": 10, "target_url": "http://127.0.0.1:1"},
        {
            "id": "b-high",
            "path_pattern": "^/v[12]/",
            "match": "regex",
            "priority": 900,
            "methods": ["get", "Post"],
            "target_proxy": "API.example.com",
        },
        {
            "id": "a-high",
            "path_pattern": "/static",
            "priority": 900,
            "target_url": "http://127.0.0.1:2",
            "scope": "proxies",
            "proxy_hostnames": ["api.example.com"],
        },
    ]
    for spec in specs:
        response = await api.post(ROUTES, json=spec, headers=ADMIN)
        assert response.status_code == 201, response.text
    generated = await api.post(
        ROUTES, json={"path_pattern": "/gen", "target_url": "http://127.0.0.1:3"}, headers=ADMIN
    )
    assert generated.status_code == 201 and generated.json()["id"].startswith("r-")
    assert generated.json()["priority"] == 500

    listing = (await api.get(ROUTES, headers=ADMIN)).json()
    assert [r["id"] for r in listing] == ["a-high", "b-high", generated.json()["id"], "low"]
    b_high = listing[1]
    assert b_high["methods"] == ["GET", "POST"] and b_high["target_proxy"] == "api.example.com"
    stored = Route.model_validate_json(await redis_client.hget(keys.routes(), "b-high"))
    assert stored.match == "regex" and stored.owner == "admin"

    replaced = await api.put(
        f"{ROUTES}low",
        json={"path_pattern": "/x", "priority": 999, "target_url": "http://127.0.0.1:4", "enabled": False},
        headers=ADMIN,
    )
    assert replaced.status_code == 200
    assert replaced.json()["enabled"] is False and replaced.json()["id"] == "low"
    assert (await api.get(ROUTES, headers=ADMIN)).json()[0]["id"] == "low"
    assert (await api.get(f"{ROUTES}low", headers=ADMIN)).json()["path_pattern"] == "/x"

    assert (await api.delete(f"{ROUTES}low", headers=ADMIN)).status_code == 204
    assert (await api.get(f"{ROUTES}low", headers=ADMIN)).status_code == 404
    assert (await api.delete(f"{ROUTES}low", headers=ADMIN)).status_code == 404
    assert await redis_client.hlen(keys.routes()) == 3


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"path_pattern": "/(unclosed", "match": "regex", "target_url": "http://h"}, "path_pattern"),
        ({"path_pattern": "no-slash", "target_url": "http://h"}, "path_pattern"),
        ({"path_pattern": "/", "target_url": "http://h", "target_proxy": "a.example.com"}, "target_proxy"),
        ({"path_pattern": "/"}, "target_proxy"),
        ({"path_pattern": "/", "target_url": "http://h", "priority": 1000}, "priority"),
        ({"path_pattern": "/", "target_url": "http://h", "methods": ["GE T"]}, "methods"),
        ({"path_pattern": "/", "target_url": "http://h", "scope": "proxies"}, "proxy_hostnames"),
        ({"path_pattern": "/", "target_proxy": "missing.example.com"}, "target_proxy"),
        # The admin, too, may only scope a route to a proxy that exists (a typo would never match).
        (
            {
                "path_pattern": "/",
                "target_url": "http://h",
                "scope": "proxies",
                "proxy_hostnames": ["ghost.localhost"],
            },
            "proxy_hostnames",
        ),
        ({"path_pattern": "/", "target_url": "http://h", "id": "bad id"}, "id"),
        ({"path_pattern": "/", "target_url": "http://h", "owner": "x"}, "owner"),
    ],
)
async def test_invalid_route_is_422_naming_the_field(
    api: httpx.AsyncClient, payload: dict[str, object], field: str
) -> None:
    response = await api.post(ROUTES, json=payload, headers=ADMIN)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail[0]["loc"][:2] == ["body", field], detail
    assert (await api.get(ROUTES, headers=ADMIN)).json() == []


async def test_duplicate_route_id_is_409(api: httpx.AsyncClient) -> None:
    spec = {"id": "r1", "path_pattern": "/", "target_url": "http://127.0.0.1:1"}
    assert (await api.post(ROUTES, json=spec, headers=ADMIN)).status_code == 201
    again = await api.post(ROUTES, json={**spec, "target_url": "http://127.0.0.1:2"}, headers=ADMIN)
    assert again.status_code == 409
    assert (await api.get(f"{ROUTES}r1", headers=ADMIN)).json()["target_url"] == "http://127.0.0.1:1"


async def test_route_ownership(api: httpx.AsyncClient) -> None:
    alice = bearer(await create_token(api, "alice"))
    bob = bearer(await create_token(api, "bob"))
    await api.post(
        PROXIES, json={"hostname": "alice.example.com", "target_url": "http://127.0.0.1:1"}, headers=alice
    )
    await api.post(
        PROXIES, json={"hostname": "bob.example.com", "target_url": "http://127.0.0.1:1"}, headers=bob
    )

    # Ordinary tokens cannot make global routes (they would apply to every owner's proxies) ...
    glob = await api.post(ROUTES, json={"path_pattern": "/", "target_url": "http://h"}, headers=alice)
    assert glob.status_code == 403
    # ... nor scope routes to, or target, someone else's proxy; unknown proxies are 422.
    other_scope = {
        "path_pattern": "/",
        "target_url": "http://h",
        "scope": "proxies",
        "proxy_hostnames": ["bob.example.com"],
    }
    assert (await api.post(ROUTES, json=other_scope, headers=alice)).status_code == 403
    other_target = {
        "path_pattern": "/",
        "target_proxy": "bob.example.com",
        "scope": "proxies",
        "proxy_hostnames": ["alice.example.com"],
    }
    assert (await api.post(ROUTES, json=other_target, headers=alice)).status_code == 403
    missing = {**other_scope, "proxy_hostnames": ["nobody.example.com"]}
    assert (await api.post(ROUTES, json=missing, headers=alice)).status_code == 422

    own = {
        "id": "alice-r",
        "path_pattern": "/api",
        "target_url": "http://h",
        "scope": "proxies",
        "proxy_hostnames": ["alice.example.com"],
    }
    created = await api.post(ROUTES, json=own, headers=alice)
    assert created.status_code == 201 and created.json()["owner"] == "alice"
    await api.post(
        ROUTES, json={"id": "admin-r", "path_pattern": "/", "target_url": "http://h"}, headers=ADMIN
    )

    assert [r["id"] for r in (await api.get(ROUTES, headers=alice)).json()] == ["alice-r"]
    assert (await api.get(ROUTES, headers=bob)).json() == []
    assert (await api.get(f"{ROUTES}alice-r", headers=bob)).status_code == 403
    assert (await api.get(f"{ROUTES}admin-r", headers=alice)).status_code == 403
    put_body = {k: v for k, v in own.items() if k != "id"}
    assert (await api.put(f"{ROUTES}alice-r", json=put_body, headers=bob)).status_code == 403
    assert (await api.delete(f"{ROUTES}alice-r", headers=bob)).status_code == 403
    # The owner may widen it to global only through the admin.
    assert (
        await api.put(
            f"{ROUTES}alice-r", json={**put_body, "scope": "global", "proxy_hostnames": []}, headers=alice
        )
    ).status_code == 403
    assert (
        await api.put(f"{ROUTES}alice-r", json={**put_body, "path_pattern": "/v2"}, headers=alice)
    ).json()["path_pattern"] == "/v2"
    assert (await api.delete(f"{ROUTES}alice-r", headers=alice)).status_code == 204


async def test_regex_routes_are_re2_and_what_it_cannot_run_is_422_with_the_reason(
    api: httpx.AsyncClient,
) -> None:
    """A pattern that backtracks catastrophically in Python's `re` is fine for RE2 (linear time), so it is
    accepted; backreferences and lookaround, which RE2 cannot run, are refused with why (issue 9 #5)."""
    alice = bearer(await create_token(api, "alice"))
    made = await api.post(
        PROXIES,
        json={"hostname": "alice.example.com", "target_url": "http://backend.example.com:3000"},
        headers=alice,
    )
    assert made.status_code == 201, made.text
    scoped = {
        "target_url": "http://backend.example.com:3001",
        "scope": "proxies",
        "proxy_hostnames": ["alice.example.com"],
    }
    for pattern, reason in (
        (r"^/(?=admin)", "invalid perl operator"),
        (r"^/(a)\1$", "invalid escape sequence"),
    ):
        response = await api.post(
            ROUTES, json={"path_pattern": pattern, "match": "regex", **scoped}, headers=alice
        )
        assert response.status_code == 422, response.text
        message = response.json()["detail"][0]["msg"]
        assert reason in message and "RE2" in message and "lookaround" in message, message
    response = await api.post(
        ROUTES, json={"path_pattern": r"^/(a+)+$", "match": "regex", **scoped}, headers=alice
    )
    assert response.status_code == 201, response.text
