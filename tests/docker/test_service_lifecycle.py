"""A service's whole life against a real dockerd, a real control plane and a real data plane: created with
its auto proxy, reached through the data plane, stopped, started, restarted, its logs and stats read, killed
from outside and restarted by its policy, the control plane and dockerd restarted under it without a second
container appearing, recreated by an update with the proxy following the new port, and deleted with its
container, ports and proxy. A memory hog is OOM-killed by its limit and reported so."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.control_plane.conftest import ADMIN
from tests.data_plane.conftest import DataPlane, start_data_plane
from tests.harness.dockerd import Dockerd, engine_request
from tests.harness.services import RedisServer

from .conftest import (
    PORTS,
    SERVICES,
    ServicesPlane,
    created_containers,
    eventually,
    httpd_service,
    service_of,
    wait_for_state,
)
from .images import HOG_COMMAND, INDEX_PAGE

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(300)]

HOST = "web.test.localhost"


@pytest.fixture
def data_plane(
    services_plane: ServicesPlane, redis_server: RedisServer, tmp_path: Path
) -> AsyncIterator[DataPlane]:
    plane = start_data_plane(redis_server, tmp_path, {"BASE_DOMAIN": "test.localhost"})
    try:
        yield plane
    finally:
        plane.service.stop()


async def through_proxy(plane: DataPlane, path: str = "/") -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(plane.url + path, headers={"Host": HOST})


async def serves_page(plane: DataPlane) -> bool:
    response = await through_proxy(plane)
    return response.status_code == 200 and response.content == INDEX_PAGE


def containers_of(dockerd: Dockerd, service: str) -> list[dict[str, Any]]:
    return dockerd.containers(label=[f"mhp.service={service}"])


def inspect(dockerd: Dockerd, container_id: str) -> dict[str, Any]:
    status, body = engine_request(dockerd.socket_path, "GET", f"/containers/{container_id}/json")
    assert status == 200, body
    info: dict[str, Any] = json.loads(body)
    return info


async def test_a_service_from_creation_to_deletion(
    http: httpx.AsyncClient,
    services_plane: ServicesPlane,
    data_plane: DataPlane,
    dockerd: Dockerd,
    busybox_image: str,
) -> None:
    # Create, with its auto proxy: running, and reachable through the data plane.
    body = httpd_service("web", busybox_image, auto_proxy={"enable_https": False})
    created = await http.post(SERVICES, json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    assert created.json()["auto_proxy"] == HOST
    service = await wait_for_state(http, "web", "running")
    port = service["ports"][0]["host_port"]
    assert service["endpoint"] == f"http://127.0.0.1:{port}"
    proxy = (await http.get(f"/api/v1/proxy/targets/{HOST}", headers=ADMIN)).json()
    assert proxy["target_url"] == "service://web"
    await eventually(lambda: serves_page(data_plane), "the page through the data plane")
    first_id = service["status"]["container_id"]

    # Stop: the container stays (its logs too) but is not running; the proxy answers 502.
    assert (await http.post(SERVICES + "web/stop", headers=ADMIN)).status_code == 202
    await wait_for_state(http, "web", "stopped")
    assert inspect(dockerd, first_id)["State"]["Running"] is False
    assert (await through_proxy(data_plane)).status_code == 502

    # Start and restart: the same container, started again.
    assert (await http.post(SERVICES + "web/start", headers=ADMIN)).status_code == 202
    await wait_for_state(http, "web", "running")
    await eventually(lambda: serves_page(data_plane), "the page after start")
    started = inspect(dockerd, first_id)["State"]["StartedAt"]
    assert (await http.post(SERVICES + "web/restart", headers=ADMIN)).status_code == 202
    await eventually(
        lambda: _started_after(dockerd, first_id, started), "the container to be started again by restart"
    )
    await wait_for_state(http, "web", "running")
    await eventually(lambda: serves_page(data_plane), "the page after restart")
    assert [c["Id"] for c in containers_of(dockerd, "web")] == [first_id]

    # Logs (busybox httpd -vv logs each request and its URL to stderr) and stats.
    logs = await http.get(SERVICES + "web/logs", params={"tail": 50}, headers=ADMIN)
    assert logs.status_code == 200 and "url:/" in logs.text, logs.text
    async with http.stream(
        "GET", SERVICES + "web/logs", params={"follow": "true", "tail": 1}, headers=ADMIN
    ) as stream:
        assert stream.status_code == 200
        received = ""

        async def read() -> None:
            nonlocal received
            async for chunk in stream.aiter_text():
                received += chunk
                if "/followed-request" in received:
                    return

        reading = asyncio.create_task(read())
        # The engine's log stream opens as the body starts: until it does, ask again.
        async with asyncio.timeout(15):
            while not reading.done():
                await through_proxy(data_plane, "/followed-request")
                await asyncio.wait({reading}, timeout=0.5)
        assert "/followed-request" in received
    stats = (await http.get(SERVICES + "web/stats", headers=ADMIN)).json()
    assert stats["memory_limit_bytes"] == 32 * 1024 * 1024
    assert 0 < stats["memory_used_bytes"] < stats["memory_limit_bytes"]
    assert stats["pids"] >= 1 and stats["cpu_percent"] >= 0 and stats["restarts"] == 0
    assert inspect(dockerd, first_id)["HostConfig"]["Memory"] == 32 * 1024 * 1024

    # Killed from outside (the process, as a crash would): the engine restarts it per its policy, and the
    # status says so.
    os.kill(inspect(dockerd, first_id)["State"]["Pid"], signal.SIGKILL)
    service = await wait_for_state(http, "web", "running", where=lambda s: s["status"]["restart_count"] >= 1)
    assert service["status"]["container_id"] == first_id
    await eventually(lambda: serves_page(data_plane), "the page after the crash")

    # dockerd and the control plane restart under it: the same one container keeps serving, and the engine
    # creates no other (its event history since its restart has no `create`).
    dockerd.restart()
    since = int(time.time()) - 1
    services_plane.restart()
    await eventually(lambda: serves_page(data_plane), "the page after restarting dockerd", within_seconds=60)
    await wait_for_state(http, "web", "running", within_seconds=60)
    await asyncio.sleep(3)  # a reconcile interval and more: nothing else gets created meanwhile
    assert [c["Id"] for c in containers_of(dockerd, "web")] == [first_id]
    assert created_containers(dockerd, since) == {}

    # An update recreates the container on another host port; the proxy follows without a restart.
    new_port = port + 1 if port < 21999 else port - 1
    changed = await http.patch(
        SERVICES + "web",
        json={"ports": [{"name": "http", "host_port": new_port}], "environment": {"GREETING": "hi"}},
        headers=ADMIN,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["generation"] == 2
    service = await wait_for_state(
        http, "web", "running", where=lambda s: s["endpoint"] == f"http://127.0.0.1:{new_port}"
    )
    assert service["status"]["container_id"] != first_id
    await eventually(lambda: serves_page(data_plane), "the page on the new port")
    assert [c["Id"] for c in containers_of(dockerd, "web")] == [service["status"]["container_id"]]
    allocated = {(a["port"], a["service"]) for a in (await http.get(PORTS, headers=ADMIN)).json()}
    assert allocated == {(new_port, "web")}

    # Delete: container, ports and proxy go.
    assert (await http.delete(SERVICES + "web", headers=ADMIN)).status_code == 204
    assert (await http.get(SERVICES + "web", headers=ADMIN)).status_code == 404
    assert (await http.get(f"/api/v1/proxy/targets/{HOST}", headers=ADMIN)).status_code == 404
    assert (await http.get(PORTS, headers=ADMIN)).json() == []

    async def container_gone() -> bool:
        return containers_of(dockerd, "web") == []

    await eventually(container_gone, "the container to be removed")
    await eventually(lambda: _status_is(data_plane, 404), "the data plane to forget the proxy")


async def _started_after(dockerd: Dockerd, container_id: str, started: str) -> bool:
    return inspect(dockerd, container_id)["State"]["StartedAt"] != started


async def _status_is(plane: DataPlane, status: int) -> bool:
    return (await through_proxy(plane)).status_code == status


async def test_a_memory_hog_is_oom_killed_and_reported(
    http: httpx.AsyncClient, dockerd: Dockerd, busybox_image: str
) -> None:
    body = {
        "name": "hog",
        "image": busybox_image,
        "command": HOG_COMMAND,
        "network_mode": "none",
        "memory_limit": "16m",
        "restart_policy": "no",
    }
    assert (await http.post(SERVICES, json=body, headers=ADMIN)).status_code == 201
    service = await wait_for_state(http, "hog", "oom_killed")
    status = service["status"]
    assert status["oom_killed"] is True and status["exit_code"] == 137 and status["last_oom_at"]
    info = inspect(dockerd, status["container_id"])
    assert info["State"]["OOMKilled"] is True
    assert info["HostConfig"]["Memory"] == info["HostConfig"]["MemorySwap"] == 16 * 1024 * 1024
    assert (await service_of(http, "hog"))["status"]["state"] == "oom_killed"
