"""Requests through a real data plane -> the stream -> the control plane's indexer -> search and stats, with
tenant isolation, pagination and redaction. Waits poll the API; no assertion depends on timing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from shared import keys
from tests.control_plane.conftest import ADMIN

from .conftest import Tenants, search, wait_until

SECRETS = ("s3cret-token-value", "the-auth-code", "verifier-abcdef", "client-secret-xyz", "cookie-value-42")


async def send(tenants: Tenants, host: str, path: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(tenants.url(path), headers={"Host": host, **kwargs.pop("headers", {})})
    return response


async def traffic(tenants: Tenants) -> dict[str, str]:
    """Alice: 2 ok (one slow), 2 x 404, one 503; Bob: 3 ok. Returns request ids by label."""
    ids = {}
    secret_query = (
        f"/docs?token={SECRETS[0]}&code={SECRETS[1]}&code_verifier={SECRETS[2]}"
        f"&client_secret={SECRETS[3]}&page=2"
    )
    first = await send(
        tenants,
        tenants.alice_host,
        secret_query,
        headers={"Authorization": "Bearer s3cret-token-value", "Cookie": f"session={SECRETS[4]}"},
    )
    assert first.status_code == 200
    ids["docs"] = first.headers["x-request-id"]
    for _ in range(2):
        assert (await send(tenants, tenants.alice_host, "/status/404")).status_code == 404
    assert (await send(tenants, tenants.alice_host, "/status/503")).status_code == 503
    slow = await send(tenants, tenants.alice_host, "/slow?seconds=0.4")
    assert slow.status_code == 200
    ids["slow"] = slow.headers["x-request-id"]
    for number in range(3):
        assert (await send(tenants, tenants.bob_host, f"/b/{number}")).status_code == 200
    return ids


async def indexed(api: httpx.AsyncClient, total: int) -> bool:
    body = await search(api, limit=500)
    indexer: dict[str, Any] = body["indexer"]
    return len(body["items"]) == total and indexer["unindexed"] == 0


@pytest.fixture
async def logged(logs_api: httpx.AsyncClient, tenants: Tenants) -> dict[str, str]:
    ids = await traffic(tenants)
    await wait_until(lambda: indexed(logs_api, 8), "8 entries written and indexed")
    return ids


async def test_search_filters_over_indexed_entries(
    logs_api: httpx.AsyncClient, tenants: Tenants, logged: dict[str, str]
) -> None:
    async def count(headers: dict[str, str] = ADMIN, **params: object) -> int:
        body = await search(logs_api, headers, limit=500, **params)
        return len(body["items"])

    assert await count() == 8
    assert await count(host=tenants.alice_host) == 5
    assert await count(host=tenants.bob_host.upper()) == 3
    assert await count(status="4xx") == 2
    assert await count(status="503") == 1
    assert await count(status="200", host=tenants.bob_host) == 3
    assert await count(errors="true") == 1
    assert await count(slow="true") == 1
    assert await count(min_duration_ms=0) == 8
    assert await count(path_prefix="/status/") == 3
    assert await count(method="get") == 8
    assert await count(method="POST") == 0
    assert await count(client_ip="127.0.0.1") == 8
    assert await count(client_ip="192.0.2.1") == 0
    assert await count(since="2m") == 8
    assert await count(until="1h") == 0

    # Which path answered: the indexes once the indexer caught up, the stream for an unfiltered admin query.
    assert (await search(logs_api, host=tenants.alice_host))["index"] == "host"
    assert (await search(logs_api, status="4xx"))["index"] == "class"
    assert (await search(logs_api, client_ip="127.0.0.1", status="404"))["index"] in ("class", "ip")
    # Several indexed filters: one index drives, Redis checks the others (the answers must not change).
    assert await count(client_ip="127.0.0.1", status="404") == 2
    assert await count(host=tenants.alice_host, status="5xx") == 1
    assert await count(host=tenants.bob_host, status="4xx") == 0
    assert await count(host=tenants.alice_host, errors="true") == 1
    assert await count(tenants.alice, errors="true", client_ip="127.0.0.1") == 1
    assert await count(tenants.bob, status="5xx") == 0
    assert (await search(logs_api))["index"] == "stream"

    found = await search(logs_api, request_id=logged["slow"])
    items: list[dict[str, Any]] = found["items"]
    assert [item["request_id"] for item in items] == [logged["slow"]]
    assert items[0]["path"] == "/slow?seconds=REDACTED"
    assert items[0]["duration_seconds"] >= 0.4
    assert found["index"] == "request-id"

    newest_first = await search(logs_api, limit=500)
    times = [item["id"] for item in newest_first["items"]]
    assert times == sorted(times, key=lambda i: tuple(map(int, i.split("-"))), reverse=True)


async def test_an_ordinary_token_sees_only_its_own_proxies(
    logs_api: httpx.AsyncClient, tenants: Tenants, logged: dict[str, str]
) -> None:
    alice = await search(logs_api, tenants.alice, limit=500)
    assert {item["host"] for item in alice["items"]} == {tenants.alice_host}
    assert len(alice["items"]) == 5
    bob = await search(logs_api, tenants.bob, limit=500)
    assert {item["host"] for item in bob["items"]} == {tenants.bob_host}
    # Another tenant's request id, or its host, reveals nothing.
    assert (await search(logs_api, tenants.bob, request_id=logged["docs"]))["items"] == []
    refused = await logs_api.get("/api/v1/logs/", params={"host": tenants.alice_host}, headers=tenants.bob)
    assert refused.status_code == 403
    stats = await logs_api.get("/api/v1/logs/stats", params={"host": tenants.alice_host}, headers=tenants.bob)
    assert stats.status_code == 403
    mine = (await logs_api.get("/api/v1/logs/stats", headers=tenants.bob)).json()
    assert [proxy["host"] for proxy in mine["proxies"]] == [tenants.bob_host]
    # The sum over all of a token's proxies holds its own entries only.
    assert mine["all"]["totals"]["requests"] == len(bob["items"])
    everyone = (await logs_api.get("/api/v1/logs/stats", headers=ADMIN)).json()
    assert sorted(proxy["host"] for proxy in everyone["proxies"]) == [tenants.alice_host, tenants.bob_host]
    assert everyone["all"]["totals"]["requests"] == len(alice["items"]) + len(bob["items"])
    assert (await logs_api.get("/api/v1/logs/")).status_code == 401


async def test_pages_follow_the_cursor_without_gaps_or_repeats(
    logs_api: httpx.AsyncClient, tenants: Tenants, logged: dict[str, str]
) -> None:
    everything = [item["id"] for item in (await search(logs_api, limit=500))["items"]]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, object] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = await search(logs_api, **params)
        seen += [item["id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == everything
    assert pages == 3
    # Within one tenant's scope too (the host-index path).
    mine = [item["id"] for item in (await search(logs_api, tenants.alice, limit=2))["items"]]
    rest = await search(logs_api, tenants.alice, limit=500, cursor=mine[-1])
    assert len(mine) + len(rest["items"]) == 5
    assert not set(mine) & {item["id"] for item in rest["items"]}


async def test_stats_per_proxy(logs_api: httpx.AsyncClient, tenants: Tenants, logged: dict[str, str]) -> None:
    response = await logs_api.get(
        "/api/v1/logs/stats", params={"host": tenants.alice_host, "bucket": "minute"}, headers=tenants.alice
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["bucket"] == "minute"
    (proxy,) = body["proxies"]
    totals = proxy["totals"]
    assert totals["requests"] == 5
    assert totals["status"] == {"1xx": 0, "2xx": 2, "3xx": 0, "4xx": 2, "5xx": 1}
    assert totals["unique_ips"] == 1
    assert totals["unique_users"] == 0
    assert totals["bytes_out"] > 0
    assert totals["latency_ms"]["p99"] >= 250  # the 0.4 s request is the slowest, in the 250-500 ms bucket
    assert {"value": "/status/404", "count": 2} in totals["top_paths"]
    assert sum(bucket["requests"] for bucket in proxy["buckets"]) == 5
    hourly = (
        await logs_api.get("/api/v1/logs/stats", params={"since": "1d", "bucket": "hour"}, headers=ADMIN)
    ).json()
    assert sum(p["totals"]["requests"] for p in hourly["proxies"]) == 8


async def test_no_secret_reaches_redis(
    logs_api: httpx.AsyncClient, tenants: Tenants, logged: dict[str, str], redis_client: aioredis.Redis
) -> None:
    found = await search(logs_api, request_id=logged["docs"])
    (entry,) = found["items"]
    assert entry["path"] == (
        "/docs?token=REDACTED&code=REDACTED&code_verifier=REDACTED&client_secret=REDACTED&page=2"
    )
    # Nothing the client sent as a secret is stored anywhere: stream, indexes, aggregates.
    dump = []
    async for key in redis_client.scan_iter(match=f"{keys.LOG_TAG}*"):
        kind = await redis_client.type(key)
        dump.append(key)
        if kind == "stream":
            dump += [repr(row) for row in await redis_client.xrange(key)]
        elif kind == "zset":
            dump += [repr(row) for row in await redis_client.zrange(key, 0, -1, withscores=True)]
        elif kind == "hash":
            dump.append(repr(await redis_client.hgetall(key)))
        elif kind == "set":
            dump.append(repr(await redis_client.smembers(key)))
    text = "\n".join(dump)
    assert "REDACTED" in text
    for secret in SECRETS:
        assert secret not in text


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "yesterday-ish"}, "since"),
        ({"since": "5m", "until": "10m"}, "since"),
        ({"status": "6xx"}, "status"),
        ({"status": "20"}, "status"),
        ({"cursor": "not-an-id"}, "cursor"),
        ({"limit": 501}, "limit"),
        ({"since": "1e300"}, "since"),
    ],
)
async def test_bad_input_is_a_clear_422(
    logs_api: httpx.AsyncClient, params: dict[str, object], field: str
) -> None:
    response = await logs_api.get("/api/v1/logs/", params=params, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert field in response.text


async def test_stats_bad_bucket_is_422(logs_api: httpx.AsyncClient) -> None:
    response = await logs_api.get("/api/v1/logs/stats", params={"bucket": "week"}, headers=ADMIN)
    assert response.status_code == 422
    assert "minute, hour or auto" in response.text
