"""Fixtures for the request-log tests: the control plane in-process (its indexer running, unless a test
builds its own), a real data plane writing the entries, and a real HTTP backend behind it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from control_plane.app import create_app
from shared import keys
from shared.config import Settings
from tests.conftest import LOOPBACK_TARGETS
from tests.control_plane.conftest import ADMIN, RunningControlPlane, bearer, create_token, serving
from tests.data_plane.backends import HttpBackend
from tests.data_plane.conftest import DataPlane, start_data_plane
from tests.harness.services import RedisServer

SLOW_THRESHOLD_SECONDS = 0.25


async def wait_until(predicate: Callable[[], object], what: str, deadline_seconds: float = 20.0) -> None:
    """Poll until `predicate` (sync or async) is truthy; the deadline only stops a hung test."""
    try:
        async with asyncio.timeout(deadline_seconds):
            while True:
                result = predicate()
                if asyncio.iscoroutine(result):
                    result = await result
                if result:
                    return
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"gave up waiting: {what}") from None


@pytest.fixture
def log_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"LOG_SLOW_THRESHOLD_SECONDS": SLOW_THRESHOLD_SECONDS})


@pytest.fixture
async def logs_api(log_settings: Settings, redis_client: aioredis.Redis) -> AsyncIterator[httpx.AsyncClient]:
    """The control plane in-process with its lifespan (so its log indexer runs); Redis flushed first."""
    app = create_app(log_settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://control-plane.test") as client:
            yield client


@pytest.fixture
def backend() -> Iterator[HttpBackend]:
    started = HttpBackend()
    try:
        yield started
    finally:
        started.close()


@dataclass
class Tenants:
    alice: dict[str, str]  # bearer headers
    bob: dict[str, str]
    alice_host: str
    bob_host: str
    plane: DataPlane

    def url(self, path: str) -> str:
        return f"{self.plane.url}{path}"


@pytest.fixture
async def tenants(
    logs_api: httpx.AsyncClient,
    redis_client: aioredis.Redis,
    redis_server: RedisServer,
    backend: HttpBackend,
    tmp_path: Path,
) -> AsyncIterator[Tenants]:
    """Two tokens, each owning one proxy to the backend, served by a real data plane."""
    alice = bearer(await create_token(logs_api, "alice"))
    bob = bearer(await create_token(logs_api, "bob"))
    for headers, host in ((alice, "alice.test.localhost"), (bob, "bob.test.localhost")):
        created = await logs_api.post(
            "/api/v1/proxy/targets/", json={"hostname": host, "target_url": backend.url}, headers=headers
        )
        assert created.status_code == 201, created.text
    plane = start_data_plane(redis_server, tmp_path, {"ALLOWED_TARGET_CIDRS": LOOPBACK_TARGETS})
    try:
        version = int(await redis_client.get(keys.config_version()) or 0)
        await asyncio.to_thread(plane.wait_for_version, version, 10.0)
        yield Tenants(alice, bob, "alice.test.localhost", "bob.test.localhost", plane)
    finally:
        plane.service.stop()


async def search(api: httpx.AsyncClient, headers: dict[str, str] = ADMIN, **params: object) -> dict[str, Any]:
    response = await api.get("/api/v1/logs/", params=params, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def plane_pair(
    request: pytest.FixtureRequest, redis_client: aioredis.Redis, redis_server: RedisServer, tmp_path: Path
) -> Iterator[RunningControlPlane]:
    """`python -m control_plane`; without its indexer (and ACME consumer) unless the test module sets
    INDEXER = True, so that the only blocking stream reads on this Redis are live tails'."""
    indexer = "true" if getattr(request.module, "INDEXER", False) else "false"
    with serving(
        redis_server,
        tmp_path,
        LOG_INDEXER_ENABLED=indexer,
        ACME_WORKER_ENABLED="false",
        LOG_SLOW_THRESHOLD_SECONDS=str(SLOW_THRESHOLD_SECONDS),
    ) as cp:
        yield cp


@dataclass
class World:
    cp: RunningControlPlane
    plane: DataPlane
    alice: dict[str, str]
    tokens: dict[str, str]


@pytest.fixture
async def world(
    plane_pair: RunningControlPlane,
    redis_client: aioredis.Redis,
    redis_server: RedisServer,
    backend: HttpBackend,
    tmp_path: Path,
) -> AsyncIterator[World]:
    async with httpx.AsyncClient(base_url=plane_pair.url, timeout=10) as api:
        headers, tokens = {}, {}
        for name in ("alice", "bob"):
            made = await api.post("/api/v1/tokens/", json={"name": name}, headers=ADMIN)
            assert made.status_code == 201, made.text
            tokens[name] = made.json()["token"]
            headers[name] = bearer(tokens[name])
            created = await api.post(
                "/api/v1/proxy/targets/",
                json={"hostname": f"{name}.test.localhost", "target_url": backend.url},
                headers=headers[name],
            )
            assert created.status_code == 201, created.text
    plane = start_data_plane(redis_server, tmp_path / "dp", {"ALLOWED_TARGET_CIDRS": LOOPBACK_TARGETS})
    try:
        version = int(await redis_client.get(keys.config_version()) or 0)
        await asyncio.to_thread(plane.wait_for_version, version, 10.0)
        yield World(plane_pair, plane, headers["alice"], tokens)
    finally:
        plane.service.stop()
