"""Certificate-test fixtures: a real Pebble CA (session), settings pointing the control plane at it, and a
real HTTP-01 responder on Pebble's httpPort.

The responder is a small asyncio HTTP server in the test process that answers every request through
`data_plane.acme_challenge.answer_challenge`, reading the same Redis the control plane writes: the real
challenge code on a real socket. It stands in for the data plane's port-80 listener until that listener
serves challenges itself (then these tests should point Pebble's httpPort at the data plane instead).
"""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest
import redis.asyncio as aioredis

from control_plane.app import create_app
from data_plane.acme_challenge import answer_challenge
from shared.config import Settings, load_settings
from tests.harness.pebble import Pebble, start_pebble
from tests.harness.services import RedisServer, start_redis

ADMIN_TOKEN = "acm_test-admin-token-0123456789abcdefghijklmnop"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
KEK_B64 = base64.b64encode(bytes(range(32))).decode()
CERTS = "/api/v1/certificates/"


@pytest.fixture(scope="package")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis of the certificate tests' own: control planes that other test packages keep running for the
    whole session (with their own key-encryption keys and certificate workers) must not consume these
    tests' workflow events."""
    server = start_redis(tmp_path_factory.mktemp("redis-certificates"))
    try:
        yield server
    finally:
        server.service.stop()


@pytest.fixture(scope="session")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    server = start_pebble(tmp_path_factory.mktemp("pebble"))
    try:
        yield server
    finally:
        server.stop()


def certificate_settings(redis_server: RedisServer, pebble: Pebble, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "REDIS_URL": redis_server.url,
        "REDIS_PASSWORD": redis_server.password,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "KEY_ENCRYPTION_KEY_B64": KEK_B64,
        "BASE_DOMAIN": "test.localhost",
        "LOG_LEVEL": "DEBUG",
        "ACME_DIRECTORY_URL": pebble.directory_url,
        # The same Pebble under another name: staging and production are distinct directories (and accounts).
        "ACME_STAGING_URL": pebble.directory_url.replace("127.0.0.1", "localhost"),
        "ACME_CA_BUNDLE": str(pebble.ca_bundle),
        "ACME_EMAIL": "ops@example.com",
        "ACME_ORDER_TIMEOUT_SECONDS": 60.0,
        "ACME_LOCK_LEASE_SECONDS": 6.0,
        "ACME_RETRY_BASE_SECONDS": 3600.0,
        "ACME_WORKER_ENABLED": False,
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
def cert_settings(redis_server: RedisServer, pebble: Pebble, redis_client: aioredis.Redis) -> Settings:
    """Settings for Pebble; the background worker is OFF (tests drive the issuer directly)."""
    return certificate_settings(redis_server, pebble)


@pytest.fixture
async def api(cert_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The control plane in-process (real lifespan, real Redis), worker off."""
    async with app_client(cert_settings) as client:
        yield client


@pytest.fixture
async def api_with_worker(
    redis_server: RedisServer, pebble: Pebble, redis_client: aioredis.Redis
) -> AsyncIterator[httpx.AsyncClient]:
    """The control plane in-process with its certificate worker running, as in production."""
    settings = certificate_settings(redis_server, pebble, ACME_WORKER_ENABLED=True)
    async with app_client(settings) as client:
        yield client


@asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://control-plane.test") as client:
            yield client


@dataclass
class Responder:
    port: int
    requests: list[str]


async def _serve_challenge(
    redis: aioredis.Redis, seen: list[str], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        target = parts[1] if len(parts) == 3 else "/"
        seen.append(target)
        answer = await answer_challenge(redis, target)
        reason = "OK" if answer.status == 200 else "Not Found"
        writer.write(
            f"HTTP/1.1 {answer.status} {reason}\r\nContent-Type: {answer.content_type}\r\n"
            f"Content-Length: {len(answer.body)}\r\nConnection: close\r\n\r\n".encode("latin-1")
            + answer.body
        )
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@asynccontextmanager
async def responder_context(pebble: Pebble, redis_server: RedisServer) -> AsyncIterator[Responder]:
    """A real HTTP-01 responder on Pebble's httpPort, answering from Redis via data_plane.acme_challenge."""
    redis = aioredis.Redis.from_url(redis_server.url, password=redis_server.password, decode_responses=True)
    seen: list[str] = []
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", pebble.http_port))
    server = await asyncio.start_server(lambda r, w: _serve_challenge(redis, seen, r, w), sock=sock)
    try:
        yield Responder(port=pebble.http_port, requests=seen)
    finally:
        server.close()
        await server.wait_closed()
        await redis.aclose()


@pytest.fixture
async def responder(pebble: Pebble, redis_server: RedisServer) -> AsyncIterator[Responder]:
    async with responder_context(pebble, redis_server) as running:
        yield running


async def wait_for_status(
    api: httpx.AsyncClient,
    name: str,
    wanted: set[str],
    *,
    timeout_seconds: float = 60.0,
    serial_not: str = "",
) -> dict[str, object]:
    """Poll GET /{name} until its status is in `wanted` (and its serial differs from `serial_not`)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds
    body: dict[str, object] = {}
    while loop.time() < deadline:
        response = await api.get(f"{CERTS}{name}", headers=ADMIN)
        assert response.status_code == 200, response.text
        body = response.json()
        if body["status"] in wanted and (not serial_not or body["serial"] != serial_not):
            return body
        await asyncio.sleep(0.2)
    raise AssertionError(f"certificate {name} never reached {wanted}: {body}")
