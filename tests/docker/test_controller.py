"""The service controller against a real dockerd: orphans (our label, no record) are removed and other
deployments' containers left alone, a container whose status was lost is adopted rather than duplicated,
a flood of duplicate events and two replicas converging at once still make one container per generation,
and health checks reach the status."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from shared import keys
from tests.control_plane.conftest import ADMIN
from tests.harness.dockerd import Dockerd, engine_request
from tests.harness.services import RedisServer, free_port

from .conftest import (
    SERVICES,
    created_containers,
    eventually,
    httpd_service,
    services_env,
    start_services_plane,
    wait_for_state,
)
from .images import HOG_COMMAND

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def create_container(dockerd: Dockerd, image: str, name: str, labels: dict[str, str]) -> str:
    """A container made behind the controller's back, straight through the engine's API."""
    config = {
        "Image": image,
        "Cmd": ["busybox", "sleep", "600"],
        "Labels": labels,
        "HostConfig": {"NetworkMode": "none"},
    }
    status, body = engine_request(dockerd.socket_path, "POST", f"/containers/create?name={name}", config)
    assert status == 201, body
    container_id: str = json.loads(body)["Id"]
    status, body = engine_request(dockerd.socket_path, "POST", f"/containers/{container_id}/start")
    assert status == 204, body
    return container_id


async def test_orphans_are_removed_and_other_deployments_left_alone(
    http: httpx.AsyncClient, dockerd: Dockerd, busybox_image: str, redis_client: aioredis.Redis
) -> None:
    assert (
        await http.post(SERVICES, json=httpd_service("kept", busybox_image), headers=ADMIN)
    ).status_code == 201
    await wait_for_state(http, "kept", "running")
    deployment = await redis_client.get(keys.deployment_id())
    assert deployment
    orphan = create_container(
        dockerd, busybox_image, "orphan", {"mhp.deployment": deployment, "mhp.service": "ghost"}
    )
    stranger = create_container(
        dockerd, busybox_image, "stranger", {"mhp.deployment": "another-deployment", "mhp.service": "ghost"}
    )

    async def orphan_gone() -> bool:
        return orphan not in {c["Id"] for c in dockerd.containers()}

    await eventually(orphan_gone, "the orphan to be removed", within_seconds=20)
    remaining = {c["Id"] for c in dockerd.containers()}
    assert stranger in remaining
    assert len(dockerd.containers(label=["mhp.service=kept"])) == 1


async def test_a_lost_status_is_adopted_not_duplicated(
    http: httpx.AsyncClient, dockerd: Dockerd, busybox_image: str, redis_client: aioredis.Redis
) -> None:
    assert (
        await http.post(SERVICES, json=httpd_service("adopt", busybox_image), headers=ADMIN)
    ).status_code == 201
    first = (await wait_for_state(http, "adopt", "running"))["status"]["container_id"]
    await redis_client.hdel(keys.service_status(), "adopt")
    adopted = await wait_for_state(
        http, "adopt", "running", where=lambda s: s["status"]["container_id"] != ""
    )
    assert adopted["status"]["container_id"] == first
    assert [c["Id"] for c in dockerd.containers(label=["mhp.service=adopt"])] == [first]


async def test_duplicate_events_and_two_replicas_make_one_container_each(
    http: httpx.AsyncClient,
    dockerd: Dockerd,
    busybox_image: str,
    redis_client: aioredis.Redis,
    redis_server: RedisServer,
    build_root: Path,
    tmp_path: Path,
) -> None:
    port = free_port()
    second = start_services_plane(
        services_env(redis_server, port, dockerd, build_root), port, tmp_path / "cp2"
    )
    try:
        names = [f"many-{i}" for i in range(6)]
        for name in names:
            body = {
                "name": name,
                "image": busybox_image,
                "command": ["busybox", "sleep", "600"],
                "network_mode": "none",
                "start": False,
            }
            assert (await http.post(SERVICES, json=body, headers=ADMIN)).status_code == 201
        await asyncio.sleep(1)  # the "created" events are handled: stopped services, no containers
        assert dockerd.containers() == []
        since = int(time.time()) - 1
        # Every record now says "running" at once, and a flood of duplicate hints arrives together, as
        # retries and engine events would make: both replicas take batches of them concurrently.
        async with redis_client.pipeline(transaction=True) as pipe:
            for name in names:
                record = json.loads(await redis_client.hget(keys.services(), name))
                pipe.hset(keys.services(), name, json.dumps({**record, "desired_state": "running"}))
            for _ in range(10):
                for name in names:
                    pipe.xadd(keys.service_workflow_stream(), {"name": name, "reason": "duplicate"})
            await pipe.execute()
        async with httpx.AsyncClient(base_url=second.url, timeout=30) as other:
            for name in names:
                await wait_for_state(other, name, "running")
        await asyncio.sleep(2)
        for name in names:
            assert len(dockerd.containers(label=[f"mhp.service={name}"])) == 1, name
        # Not even for a moment: the engine's own event history shows one `create` per service.
        assert created_containers(dockerd, since) == {name: 1 for name in names}
    finally:
        second.service.stop()


async def test_health_reaches_the_status(http: httpx.AsyncClient, busybox_image: str) -> None:
    check = {"interval_seconds": 1, "timeout_seconds": 2, "retries": 1}
    healthy = httpd_service(
        "healthy",
        busybox_image,
        healthcheck={"test": ["CMD-SHELL", "busybox wget -q -O /dev/null http://127.0.0.1:$PORT/"], **check},
    )
    sick = {
        "name": "sick",
        "image": busybox_image,
        "command": ["busybox", "sleep", "600"],
        "network_mode": "none",
        "healthcheck": {"test": ["CMD", "busybox", "false"], **check},
    }
    for body in (healthy, sick):
        assert (await http.post(SERVICES, json=body, headers=ADMIN)).status_code == 201
    await wait_for_state(http, "healthy", "running", where=lambda s: s["status"]["health"] == "healthy")
    service = await wait_for_state(http, "sick", "unhealthy")
    assert service["status"]["health"] == "unhealthy"


async def test_an_oom_kill_under_a_restart_policy_is_still_reported(
    http: httpx.AsyncClient, busybox_image: str
) -> None:
    body = {
        "name": "hungry",
        "image": busybox_image,
        "command": HOG_COMMAND,
        "network_mode": "none",
        "memory_limit": "16m",
        "restart_policy": "on-failure:2",
    }
    assert (await http.post(SERVICES, json=body, headers=ADMIN)).status_code == 201
    service = await wait_for_state(
        http, "hungry", {"oom_killed", "restarting", "running"}, where=lambda s: s["status"]["last_oom_at"]
    )
    assert service["status"]["last_oom_at"] is not None
    final = await wait_for_state(
        http, "hungry", "oom_killed", where=lambda s: s["status"]["restart_count"] == 2
    )
    assert final["status"]["exit_code"] == 137


async def test_engine_events_reach_the_status_without_waiting_for_a_reconcile(
    redis_client: aioredis.Redis,
    redis_server: RedisServer,
    dockerd: Dockerd,
    busybox_image: str,
    build_root: Path,
    tmp_path: Path,
) -> None:
    """With the periodic reconcile an hour away (it ran once at start), only the engine's event stream can
    tell the controller that a container died behind its back."""
    port = free_port()
    env = services_env(redis_server, port, dockerd, build_root, SERVICE_RECONCILE_INTERVAL_SECONDS="3600")
    plane = start_services_plane(env, port, tmp_path / "cp")
    try:
        async with httpx.AsyncClient(base_url=plane.url, timeout=30) as http:
            body = {
                "name": "watched",
                "image": busybox_image,
                "command": ["busybox", "sleep", "600"],
                "network_mode": "none",
                "restart_policy": "no",
            }
            assert (await http.post(SERVICES, json=body, headers=ADMIN)).status_code == 201
            running = await wait_for_state(http, "watched", "running")
            status, info = engine_request(
                dockerd.socket_path, "GET", f"/containers/{running['status']['container_id']}/json"
            )
            assert status == 200
            os.kill(json.loads(info)["State"]["Pid"], signal.SIGKILL)
            exited = await wait_for_state(http, "watched", "exited", within_seconds=10)
            assert exited["status"]["exit_code"] == 137
    finally:
        plane.service.stop()
