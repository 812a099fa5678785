"""Control-plane fixtures: the app in-process over ASGI (with its real lifespan and the real test Redis), and
`python -m control_plane` as a real subprocess on a free port. Nothing is mocked."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from control_plane.app import create_app
from shared.config import Settings
from tests.conftest import LOOPBACK_TARGETS, NO_RATE_LIMITS, REPO_ROOT
from tests.harness.services import RedisServer, ServiceProcess, free_port, port_open

ADMIN_TOKEN = "acm_test-admin-token-0123456789abcdefghijklmnop"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ADMIN = bearer(ADMIN_TOKEN)


@pytest.fixture
async def api(settings: Settings, redis_client: aioredis.Redis) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to the app in-process; Redis is flushed by `redis_client` first."""
    assert settings.ADMIN_TOKEN == ADMIN_TOKEN
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://control-plane.test") as client:
            yield client


async def create_token(api: httpx.AsyncClient, name: str, cert_email: str = "") -> str:
    response = await api.post("/api/v1/tokens/", json={"name": name, "cert_email": cert_email}, headers=ADMIN)
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


@dataclass
class RunningControlPlane:
    url: str
    service: ServiceProcess
    env: dict[str, str]


def control_plane_env(redis_server: RedisServer, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MHP_")}
    env.update(
        REDIS_URL=redis_server.url,
        REDIS_PASSWORD=redis_server.password,
        ADMIN_TOKEN=ADMIN_TOKEN,
        API_HOST="127.0.0.1",
        API_PORT=str(port),
        LOG_LEVEL="INFO",
        MHP_ENV_FILE=os.devnull,
        ALLOWED_TARGET_CIDRS=LOOPBACK_TARGETS,
        **NO_RATE_LIMITS,
    )
    return env


def start_control_plane(env: dict[str, str], port: int, log_dir: Path) -> ServiceProcess:
    return ServiceProcess(
        name=f"control_plane:{port}",
        argv=[sys.executable, "-m", "control_plane"],
        log_path=log_dir / "control_plane.log",
        ready=lambda: port_open("127.0.0.1", port),
        env=env,
        cwd=REPO_ROOT,
    ).start()


@contextmanager
def serving(redis_server: RedisServer, log_dir: Path, **settings: str) -> Iterator[RunningControlPlane]:
    """A `python -m control_plane` on a free port with the test env plus `settings`, stopped afterwards."""
    port = free_port()
    env = {**control_plane_env(redis_server, port), **settings}
    service = start_control_plane(env, port, log_dir)
    try:
        yield RunningControlPlane(url=f"http://127.0.0.1:{port}", service=service, env=env)
    finally:
        service.stop()


@pytest.fixture(scope="module")
def running_control_plane(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningControlPlane]:
    with serving(redis_server, tmp_path_factory.mktemp("control_plane")) as plane:
        yield plane
