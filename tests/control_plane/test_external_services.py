"""External services through a real data plane: a proxy and a route that target `service://NAME` reach the
URL the name stands for, follow it when it changes (live, no restart), and a proxy whose service is gone
answers 503 instead of reaching anything."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from control_plane.app import create_app
from shared import keys
from shared.config import Settings
from tests.data_plane.backends import HttpBackend
from tests.data_plane.conftest import DataPlane, start_data_plane
from tests.harness.services import RedisServer

from .conftest import ADMIN

EXTERNAL = "/api/v1/services/external/"
HOST = "app.example.net"


@pytest.fixture
async def api_and_plane(
    settings: Settings, redis_client: aioredis.Redis, redis_server: RedisServer, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, DataPlane]]:
    app = create_app(settings.model_copy(update={"ACME_WORKER_ENABLED": False}))
    plane = start_data_plane(redis_server, tmp_path)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://control-plane.test") as client:
                yield client, plane
    finally:
        plane.service.stop()


@pytest.fixture
def backends() -> Iterator[tuple[HttpBackend, HttpBackend]]:
    first, second = HttpBackend(), HttpBackend()
    try:
        yield first, second
    finally:
        first.close()
        second.close()


async def caught_up(redis_client: aioredis.Redis, plane: DataPlane) -> None:
    plane.wait_for_version(int(await redis_client.get(keys.config_version()) or 0))


async def test_changing_an_external_services_url_repoints_every_user_live(
    api_and_plane: tuple[httpx.AsyncClient, DataPlane],
    backends: tuple[HttpBackend, HttpBackend],
    redis_client: aioredis.Redis,
) -> None:
    api, plane = api_and_plane
    first, second = backends
    created = await api.post(EXTERNAL, json={"name": "backend", "url": first.url}, headers=ADMIN)
    assert created.status_code == 201, created.text
    proxy = {"hostname": HOST, "target_url": "service://backend", "enable_https": False}
    assert (await api.post("/api/v1/proxy/targets/", json=proxy, headers=ADMIN)).status_code == 201
    other = {"hostname": "other.example.net", "target_url": "http://127.0.0.1:9", "enable_https": False}
    assert (await api.post("/api/v1/proxy/targets/", json=other, headers=ADMIN)).status_code == 201
    route = {
        "id": "via-name",
        "path_pattern": "/named",
        "target_url": "service://backend/base",
        "scope": "proxies",
        "proxy_hostnames": ["other.example.net"],
    }
    assert (await api.post("/api/v1/routes/", json=route, headers=ADMIN)).status_code == 201
    await caught_up(redis_client, plane)

    async with httpx.AsyncClient(base_url=plane.url, timeout=10) as client:
        assert (await client.get("/a", headers={"Host": HOST})).status_code == 200
        assert (await client.get("/named/b", headers={"Host": "other.example.net"})).status_code == 200
        assert [r["target"] for r in first.requests] == ["/a", "/base/named/b"]

        moved = await api.put(EXTERNAL + "backend", json={"url": second.url + "/v2"}, headers=ADMIN)
        assert moved.status_code == 200 and moved.json()["url"] == second.url + "/v2"
        await caught_up(redis_client, plane)
        assert (await client.get("/c", headers={"Host": HOST})).status_code == 200
        assert (await client.get("/named/d", headers={"Host": "other.example.net"})).status_code == 200
        assert [r["target"] for r in second.requests] == ["/v2/c", "/v2/base/named/d"]
        assert len(first.requests) == 2

        # A name that vanished under its users (say a tenant's service went with its token while an admin's
        # proxy still names it): the proxy answers 503, it does not guess.
        await redis_client.hdel(keys.service_endpoints(), "backend")
        await redis_client.incr(keys.config_version())
        await redis_client.publish(keys.changes_channel(), "999999")
        await caught_up(redis_client, plane)
        assert (await client.get("/e", headers={"Host": HOST})).status_code == 503
        assert len(second.requests) == 2
