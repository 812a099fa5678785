"""Fixtures for the Docker-managed services tests: one private dockerd per session (tests/harness/dockerd.py),
the busybox test image built once from local files, and per test a real `python -m control_plane` with
DOCKER_URL pointing at that dockerd, over a flushed Redis. Every container the engine runs is removed
after each test, and the daemon (with its state) after the session. Nothing is mocked."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis.asyncio as aioredis

from shared.encryption import new_key_b64
from tests.control_plane.conftest import ADMIN, control_plane_env, start_control_plane
from tests.harness.dockerd import Dockerd, discard, engine_request, start_dockerd
from tests.harness.services import RedisServer, ServiceProcess, free_port

from .images import ensure_busybox_image

SERVICES = "/api/v1/services/"
EXTERNAL = "/api/v1/services/external/"
PORTS = "/api/v1/ports/"
# Host ports the services of these tests get: below Linux's ephemeral range (32768-60999), so the kernel
# never hands one to an unrelated socket (the allocator would skip it anyway: it probes every port).
PORT_RANGE = (21000, 21999)
BUILD_TENANT = "builder"


@pytest.fixture(scope="session")
def dockerd() -> Iterator[Dockerd]:
    daemon = start_dockerd()
    try:
        yield daemon
    finally:
        discard(daemon)


@pytest.fixture(scope="session")
def busybox_image(dockerd: Dockerd) -> str:
    return asyncio.run(ensure_busybox_image(dockerd.url))


@pytest.fixture
def build_root(tmp_path: Path) -> Path:
    root = tmp_path / "builds"
    (root / BUILD_TENANT).mkdir(parents=True)
    return root


@dataclass
class ServicesPlane:
    """A running control plane that manages services on the test dockerd."""

    url: str
    port: int
    env: dict[str, str]
    log_dir: Path
    service: ServiceProcess

    def restart(self) -> None:
        self.service.stop()
        self.service = start_control_plane(self.env, self.port, self.log_dir)

    def log(self) -> str:
        return self.service.log_tail(200)


def services_env(
    redis_server: RedisServer, port: int, dockerd: Dockerd, build_root: Path, **extra: str
) -> dict[str, str]:
    env = control_plane_env(redis_server, port)
    env.update(
        DOCKER_URL=dockerd.url,
        DOCKER_BUILD_ROOT=str(build_root),
        DOCKER_IMAGE_ALLOWLIST="docker.io/mhp-test/",
        KEY_ENCRYPTION_KEY_B64=new_key_b64(),
        BASE_DOMAIN="test.localhost",
        PORT_RANGES=f"{PORT_RANGE[0]}-{PORT_RANGE[1]}",
        SERVICE_RECONCILE_INTERVAL_SECONDS="2",
        SERVICE_CLAIM_IDLE_SECONDS="5",
        SERVICE_STOP_TIMEOUT_SECONDS="2",
        ACME_WORKER_ENABLED="false",
        # Service-owned proxies reach their containers through service://NAME; loopback stays closed to
        # tenants' own URLs, as in production.
        ALLOWED_TARGET_CIDRS="",
        LOG_LEVEL="INFO",
    )
    env.update(extra)
    return env


def start_services_plane(env: dict[str, str], port: int, log_dir: Path) -> ServicesPlane:
    service = start_control_plane(env, port, log_dir)
    return ServicesPlane(url=f"http://127.0.0.1:{port}", port=port, env=env, log_dir=log_dir, service=service)


@pytest.fixture
async def services_plane(
    redis_client: aioredis.Redis,
    redis_server: RedisServer,
    dockerd: Dockerd,
    busybox_image: str,
    build_root: Path,
    tmp_path: Path,
) -> AsyncIterator[ServicesPlane]:
    port = free_port()
    plane = start_services_plane(services_env(redis_server, port, dockerd, build_root), port, tmp_path / "cp")
    try:
        yield plane
    finally:
        plane.service.stop()
        dockerd.remove_all_containers()


@pytest.fixture
async def http(services_plane: ServicesPlane) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=services_plane.url, timeout=30) as client:
        yield client


async def new_token(http: httpx.AsyncClient, name: str, grants: list[str] | None = None) -> dict[str, str]:
    response = await http.post("/api/v1/tokens/", json={"name": name, "grants": grants or []}, headers=ADMIN)
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def httpd_service(name: str, image: str, **fields: Any) -> dict[str, Any]:
    """A busybox web server on the host network, listening on its allocated port ($PORT)."""
    from .images import HTTPD_COMMAND

    body: dict[str, Any] = {
        "name": name,
        "image": image,
        "command": HTTPD_COMMAND,
        "network_mode": "host",
        "memory_limit": "32m",
        "ports": [{"name": "http"}],
    }
    body.update(fields)
    return body


async def service_of(http: httpx.AsyncClient, name: str, headers: dict[str, str] = ADMIN) -> dict[str, Any]:
    response = await http.get(SERVICES + name, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def wait_for_state(
    http: httpx.AsyncClient,
    name: str,
    states: set[str] | str,
    *,
    headers: dict[str, str] = ADMIN,
    within_seconds: float = 60.0,
    where: Any = None,
) -> dict[str, Any]:
    """Poll the service until its status is one of `states` (and `where(service)` holds, when given)."""
    wanted = {states} if isinstance(states, str) else states
    deadline = time.monotonic() + within_seconds
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = await service_of(http, name, headers)
        if last["status"]["state"] in wanted and (where is None or where(last)):
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"service {name} did not reach {sorted(wanted)}: {last.get('status')}")


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within_seconds: float = 30.0) -> None:
    deadline = time.monotonic() + within_seconds
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def created_containers(dockerd: Dockerd, since: int) -> dict[str, int]:
    """How many containers the engine created per service since `since` (its event history)."""
    filters = quote(json.dumps({"type": ["container"], "event": ["create"]}))
    until = int(time.time()) + 1
    status, body = engine_request(
        dockerd.socket_path, "GET", f"/events?since={since}&until={until}&filters={filters}"
    )
    assert status == 200, body
    counts: dict[str, int] = {}
    for line in body.splitlines():
        service = json.loads(line)["Actor"]["Attributes"].get("mhp.service")
        if service:
            counts[service] = counts.get(service, 0) + 1
    return counts
