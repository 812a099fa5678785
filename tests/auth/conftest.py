"""Fixtures for the OAuth tests: an RSA signing key, the local GitHub stand-in, the control plane as a
real `python -m control_plane` (uvicorn) subprocess on a free port, configured to use both, and a real
`python -m data_plane` in front of protected resources (`auth_data_plane`, with the same issuer).
Redis is flushed before each test by `redis_client`. Nothing is mocked."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from shared import keys
from shared.encryption import new_key_b64
from tests.conftest import REPO_ROOT
from tests.control_plane.conftest import (  # `api` is re-exported as a fixture for these tests
    ADMIN,
    RunningControlPlane,
    api,  # noqa: F401
    control_plane_env,
    start_control_plane,
)
from tests.data_plane.conftest import DataPlane, start_data_plane
from tests.harness.services import RedisServer, ServiceProcess, free_port, port_open

from .github_fake import FakeUser, GitHubFake
from .https_documents import DocumentServer

CONSENT_TTL_SECONDS = 86400  # the auth control plane's OAUTH_CONSENT_TTL_SECONDS (not the default)


def new_rsa_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="session")
def signing_pem() -> bytes:
    return new_rsa_pem()


@pytest.fixture(scope="session")
def signing_key_b64(signing_pem: bytes) -> str:
    return base64.b64encode(signing_pem).decode()


@pytest.fixture(scope="session")
def github() -> Iterator[GitHubFake]:
    fake = GitHubFake().start()
    fake.add_user(FakeUser("alice", 1001, "Alice", "alice@example.com", ["acme"]))
    fake.add_user(FakeUser("bob", 1002, "Bob", "", [], private_email="bob@private.example"))
    fake.add_user(FakeUser("carol", 1003, "Carol", "carol@example.com", ["other-org"]))
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="session")
def documents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocumentServer]:
    """HTTPS on loopback hosting Client ID Metadata Documents (its CA is trusted by the control plane)."""
    server = DocumentServer(tmp_path_factory.mktemp("cimd")).start()
    try:
        yield server
    finally:
        server.stop()


def oauth_control_plane_env(redis_server: RedisServer, port: int, signing_key_b64: str) -> dict[str, str]:
    """A control plane acting as the authorization server on `port`, with no ACME traffic."""
    env = control_plane_env(redis_server, port)
    env.update(
        OAUTH_ISSUER=f"http://127.0.0.1:{port}",
        OAUTH_JWT_PRIVATE_KEY_B64=signing_key_b64,
        KEY_ENCRYPTION_KEY_B64=new_key_b64(),  # per-proxy GitHub app secrets are stored encrypted
        # No certificate worker here: it would consume the certificate tests' workflow events on this Redis.
        ACME_WORKER_ENABLED="false",
        # Should one start anyway, keep its ACME traffic on a closed loopback port.
        ACME_DIRECTORY_URL="http://127.0.0.1:1/directory",
        ACME_STAGING_URL="http://127.0.0.1:1/directory",
    )
    return env


@pytest.fixture(scope="session")
def auth_control_plane(
    redis_server: RedisServer,
    github: GitHubFake,
    documents: DocumentServer,
    signing_key_b64: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningControlPlane]:
    port = free_port()
    env = oauth_control_plane_env(redis_server, port, signing_key_b64)
    env.update(github.settings_env())
    env.update(
        OAUTH_REFRESH_GRACE_SECONDS="0",
        OAUTH_CONSENT_TTL_SECONDS=str(CONSENT_TTL_SECONDS),  # not the default, so tests can tell
        # alice's `mhp oauth login` token acts as the admin on the management API; other logins do not.
        ADMIN_GITHUB_USERS="Alice",
        BASE_DOMAIN="test.localhost",
        # Client ID Metadata Documents come from the loopback HTTPS server above.
        OAUTH_CIMD_ALLOW_PRIVATE_NETWORKS="true",
        SSL_CERT_FILE=str(documents.cert_path),
        # A live log tail (/api/v1/logs/tail) ends at once, so generated requests never hang.
        LOG_TAIL_MAX_SECONDS="0.01",
    )
    log_dir = tmp_path_factory.mktemp("auth_control_plane")
    env.update(
        # The services API is on, but its engine socket does not exist: the authorization matrix asks who may
        # do what with services and ports, which needs no engine (tests/docker runs them on a real dockerd).
        DOCKER_URL=f"unix://{log_dir}/no-engine.sock",
        DOCKER_IMAGE_ALLOWLIST="docker.io/mhp-test/",
    )
    service = start_control_plane(env, port, log_dir)
    try:
        yield RunningControlPlane(url=f"http://127.0.0.1:{port}", service=service, env=env)
    finally:
        service.stop()


@pytest.fixture
async def cp(
    auth_control_plane: RunningControlPlane, redis_client: aioredis.Redis, github: GitHubFake
) -> RunningControlPlane:
    """The running control plane over an empty Redis; GitHub signs in alice unless a test says otherwise."""
    github.next_login = "alice"
    return auth_control_plane


@pytest.fixture
async def http(cp: RunningControlPlane) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=cp.url, follow_redirects=False, timeout=20) as client:
        yield client


MCP_HOST = "mcp.test.localhost"
RESOURCE = f"http://{MCP_HOST}:8080/mcp"


async def protect(
    http: httpx.AsyncClient,
    hostname: str = MCP_HOST,
    *,
    users: list[str] | None = None,
    orgs: list[str] | None = None,
    target_url: str = "http://127.0.0.1:9",
) -> None:
    """Create a proxy and protect it (as the admin)."""
    response = await http.post(
        "/api/v1/proxy/targets/",
        json={"hostname": hostname, "target_url": target_url},
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text
    response = await http.put(
        f"/api/v1/proxy/targets/{hostname}/auth",
        json={"allowed_users": users if users is not None else ["alice"], "allowed_orgs": orgs or []},
        headers=ADMIN,
    )
    assert response.status_code == 200, response.text


@pytest.fixture
async def auth_data_plane(
    cp: RunningControlPlane,
    http: httpx.AsyncClient,
    redis_client: aioredis.Redis,
    redis_server: RedisServer,
    tmp_path: Path,
) -> AsyncIterator[DataPlane]:
    """A real data plane with the control plane's issuer, over the (flushed) Redis. The control plane
    publishes its JWKS only at startup, so it is put back first, as a fresh `just up` would have it."""
    await redis_client.set(keys.oauth_jwks(), (await http.get("/jwks.json")).text)
    plane = start_data_plane(
        redis_server, tmp_path, {"OAUTH_ISSUER": cp.url, "BASE_DOMAIN": "test.localhost"}
    )
    try:
        yield plane
    finally:
        plane.service.stop()


async def data_plane_caught_up(redis_client: aioredis.Redis, plane: DataPlane) -> None:
    """Wait until the data plane serves the config version now in Redis."""
    version = int(await redis_client.get(keys.config_version()) or 0)
    await asyncio.to_thread(plane.wait_for_version, version)


@pytest.fixture(scope="session")
def mcp_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The MCP server the protected proxy points at (it checks no tokens itself)."""
    port = free_port()
    service = ServiceProcess(
        name=f"mcp-upstream:{port}",
        argv=[sys.executable, "-m", "tests.auth.mcp_upstream"],
        log_path=tmp_path_factory.mktemp("mcp_upstream") / "server.log",
        ready=lambda: port_open("127.0.0.1", port),
        env={**os.environ, "PORT": str(port), "PYTHONPATH": str(REPO_ROOT)},
        cwd=REPO_ROOT,
    ).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        service.stop()
