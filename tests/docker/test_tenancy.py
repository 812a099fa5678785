"""Tenants and their services: each token sees and changes only its own, reaches its container through its
auto proxy (service://NAME) with loopback closed to its own URLs, cannot point anything at another tenant's
service, keeps secret environment values encrypted (never returned, never in Redis in plaintext, delivered
to the container only), and takes its services, containers, ports and proxies with it when deleted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from shared import keys
from tests.control_plane.conftest import ADMIN
from tests.data_plane.conftest import DataPlane, start_data_plane
from tests.harness.dockerd import Dockerd
from tests.harness.services import RedisServer

from .conftest import PORTS, SERVICES, ServicesPlane, eventually, httpd_service, new_token, wait_for_state
from .images import INDEX_PAGE

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SECRET = "s3cr3t-value-that-must-never-be-stored-in-plaintext"


@pytest.fixture
def data_plane(
    services_plane: ServicesPlane, redis_server: RedisServer, tmp_path: Path
) -> Iterator[DataPlane]:
    plane = start_data_plane(redis_server, tmp_path, {"BASE_DOMAIN": "test.localhost"})
    try:
        yield plane
    finally:
        plane.service.stop()


async def get_via(plane: DataPlane, host: str, path: str = "/") -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(plane.url + path, headers={"Host": host})


async def redis_contains(redis: aioredis.Redis, needle: str) -> list[str]:
    """Every key whose value (of any type) contains `needle`."""
    found = []
    async for key in redis.scan_iter(count=500):
        kind = await redis.type(key)
        if kind == "string":
            values: list[Any] = [await redis.get(key)]
        elif kind == "hash":
            values = [*(await redis.hgetall(key)).items()]
        elif kind == "stream":
            values = [entry for entry in await redis.xrange(key)]
        elif kind == "zset":
            values = await redis.zrange(key, 0, -1)
        elif kind == "set":
            values = list(await redis.smembers(key))
        elif kind == "list":
            values = await redis.lrange(key, 0, -1)
        else:
            values = []
        if needle in repr(values):
            found.append(key)
    return found


async def test_tenants_see_change_and_reach_only_their_own(
    http: httpx.AsyncClient, data_plane: DataPlane, busybox_image: str, dockerd: Dockerd
) -> None:
    alice = await new_token(http, "alice", grants=["host-network"])
    bob = await new_token(http, "bob", grants=["host-network"])
    body = httpd_service("alice-web", busybox_image, auto_proxy={"enable_https": False})
    assert (await http.post(SERVICES, json=body, headers=alice)).status_code == 201
    assert (
        await http.post(SERVICES, json=httpd_service("bob-web", busybox_image), headers=bob)
    ).status_code == 201
    service = await wait_for_state(http, "alice-web", "running", headers=alice)
    assert service["owner"] == "alice"

    # Alice's proxy reaches her container, although loopback is closed to tenants' own URLs.
    async def alice_served() -> bool:
        response = await get_via(data_plane, "alice-web.test.localhost")
        return response.status_code == 200 and response.content == INDEX_PAGE

    await eventually(alice_served, "alice's service through her auto proxy")
    port = service["ports"][0]["host_port"]
    direct = await http.post(
        "/api/v1/proxy/targets/",
        json={"hostname": "sneaky.example.net", "target_url": f"http://127.0.0.1:{port}"},
        headers=bob,
    )
    assert direct.status_code == 422, direct.text

    assert [s["name"] for s in (await http.get(SERVICES, headers=bob)).json()] == ["bob-web"]
    assert {s["name"] for s in (await http.get(SERVICES, headers=ADMIN)).json()} == {"alice-web", "bob-web"}
    for method, path, payload in (
        ("GET", "alice-web", None),
        ("PATCH", "alice-web", {"memory_limit": "64m"}),
        ("POST", "alice-web/stop", None),
        ("GET", "alice-web/logs", None),
        ("GET", "alice-web/stats", None),
        ("DELETE", "alice-web", None),
    ):
        response = await http.request(method, SERVICES + path, json=payload, headers=bob)
        assert response.status_code == 403, (method, path, response.text)
    # Nor may bob target her service by name, from a proxy or a route.
    stolen = await http.post(
        "/api/v1/proxy/targets/",
        json={"hostname": "steal.example.net", "target_url": "service://alice-web", "enable_https": False},
        headers=bob,
    )
    assert stolen.status_code == 403, stolen.text
    assert (await http.get(PORTS, headers=bob)).json()[0]["service"] == "bob-web"
    assert len((await http.get(PORTS, headers=bob)).json()) == 1
    assert (await get_via(data_plane, "alice-web.test.localhost")).status_code == 200  # still hers


async def container_environment(service: dict[str, Any]) -> str:
    """What the container's process got (its CGI prints its environment), asked on its own host port."""
    port = service["ports"][0]["host_port"]
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            return (await client.get(f"http://127.0.0.1:{port}/cgi-bin/env")).text
    except httpx.TransportError:
        return ""  # not listening yet


async def test_secret_environment_values(
    http: httpx.AsyncClient, busybox_image: str, redis_client: aioredis.Redis
) -> None:
    body = httpd_service(
        "vault", busybox_image, environment={"API_KEY": {"secret": True, "value": SECRET}, "MODE": "plain"}
    )
    created = await http.post(SERVICES, json=body, headers=ADMIN)
    assert created.status_code == 201
    assert created.json()["environment"] == {"API_KEY": {"secret": True}, "MODE": "plain"}
    assert SECRET not in created.text
    service = await wait_for_state(http, "vault", "running")

    async def container_has_it() -> bool:
        return f"API_KEY={SECRET}" in await container_environment(service)

    await eventually(container_has_it, "the container to get the secret's plaintext")
    for path in ("vault", ""):
        assert SECRET not in (await http.get(SERVICES + path, headers=ADMIN)).text
    assert await redis_contains(redis_client, SECRET) == []
    stored = await redis_client.hget(keys.services(), "vault")
    assert stored is not None and "mhp-enc:v1:" in stored

    # An update that sends the secret back as {"secret": true} keeps it (a new generation still gets it).
    changed = await http.patch(
        SERVICES + "vault",
        json={"environment": {"API_KEY": {"secret": True}, "MODE": "changed"}},
        headers=ADMIN,
    )
    assert changed.status_code == 200 and changed.json()["generation"] == 2
    await wait_for_state(http, "vault", "running", where=lambda s: s["status"]["generation"] == 2)

    async def new_container_has_it() -> bool:
        environment = await container_environment(service)
        return f"API_KEY={SECRET}" in environment and "MODE=changed" in environment

    await eventually(new_container_has_it, "the recreated container to keep the secret")
    assert await redis_contains(redis_client, SECRET) == []
    # A secret never stored cannot be "kept".
    missing = await http.patch(
        SERVICES + "vault", json={"environment": {"NEW": {"secret": True}}}, headers=ADMIN
    )
    assert missing.status_code == 422 and "needs its value" in missing.text


async def test_deleting_a_token_deletes_its_services_containers_ports_and_proxies(
    http: httpx.AsyncClient, dockerd: Dockerd, busybox_image: str, redis_client: aioredis.Redis
) -> None:
    carol = await new_token(http, "carol", grants=["host-network"])
    dave = await new_token(http, "dave", grants=["host-network"])
    for name, who in (("carol-a", carol), ("carol-b", carol), ("dave-a", dave)):
        body = httpd_service(name, busybox_image, auto_proxy={"enable_https": False})
        assert (await http.post(SERVICES, json=body, headers=who)).status_code == 201
    external = {"name": "carol-api", "url": "http://93.184.216.34"}
    assert (await http.post("/api/v1/services/external/", json=external, headers=carol)).status_code == 201
    for name in ("carol-a", "carol-b", "dave-a"):
        await wait_for_state(http, name, "running")
    assert len(dockerd.containers(label=["mhp.owner=carol"])) == 2

    assert (await http.delete("/api/v1/tokens/carol", headers=ADMIN)).status_code == 204
    assert [s["name"] for s in (await http.get(SERVICES, headers=ADMIN)).json()] == ["dave-a"]
    assert {p["owner"] for p in (await http.get(PORTS, headers=ADMIN)).json()} == {"dave"}
    proxies = (await http.get("/api/v1/proxy/targets/", headers=ADMIN)).json()
    # the admin's built-in auth-host proxy (there because a KEK is set) stays; the tenants' are what changed
    assert {p["hostname"] for p in proxies if p["owner"] != "admin"} == {"dave-a.test.localhost"}
    assert set(await redis_client.hkeys(keys.service_endpoints())) == {"dave-a"}

    async def carols_containers_gone() -> bool:
        return dockerd.containers(label=["mhp.owner=carol"]) == []

    await eventually(carols_containers_gone, "carol's containers to be removed")
    assert len(dockerd.containers(label=["mhp.owner=dave"])) == 1
