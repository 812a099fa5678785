"""Issuance through the REAL data plane: `python -m data_plane` listens on Pebble's httpPort and answers the
HTTP-01 challenge from Redis, then serves the issued certificate on its HTTPS listener (picked up by the
config-version bump the certificate write makes)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO_ROOT
from tests.harness.pebble import Pebble
from tests.harness.services import RedisServer, ServiceProcess, free_port, port_open

from .conftest import ADMIN, CERTS, KEK_B64, wait_for_status
from .tls_probe import handshake

pytestmark = pytest.mark.certificates


def _start(
    redis_server: RedisServer, pebble: Pebble, tmp_path: Path, https_port: int, *, reuse_port: bool = False
) -> ServiceProcess:
    internal_port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "MHP_ENV_FILE": os.devnull,
        "REDIS_URL": redis_server.url,
        "REDIS_PASSWORD": redis_server.password,
        "BIND_HOST": "127.0.0.1",
        "HTTP_PORT": str(pebble.http_port),
        "HTTPS_PORT": str(https_port),
        "PROXY_PROTOCOL_PORT": "0",
        "INTERNAL_HOST": "127.0.0.1",
        "INTERNAL_PORT": str(internal_port),
        "KEY_ENCRYPTION_KEY_B64": KEK_B64,
        "BASE_DOMAIN": "fallback.test.localhost",
        "PYTHONPATH": str(REPO_ROOT),
    }
    service = ServiceProcess(
        name="data-plane",
        argv=[sys.executable, "-m", "data_plane", *(["--reuse-port"] if reuse_port else [])],
        log_path=tmp_path / f"data-plane-{internal_port}.log",
        ready=lambda: port_open("127.0.0.1", internal_port) and port_open("127.0.0.1", https_port),
        env=env,
        cwd=REPO_ROOT,
    )
    service.start()
    return service


@pytest.fixture
def real_data_plane(redis_server: RedisServer, pebble: Pebble, tmp_path: Path) -> Iterator[int]:
    """A real data plane on Pebble's httpPort; yields its HTTPS port."""
    https_port = free_port()
    service = _start(redis_server, pebble, tmp_path, https_port)
    try:
        yield https_port
    finally:
        service.stop()


@pytest.fixture
def two_replicas(redis_server: RedisServer, pebble: Pebble, tmp_path: Path) -> Iterator[int]:
    """Two data-plane processes sharing Pebble's httpPort and one HTTPS port (SO_REUSEPORT)."""
    https_port = free_port()
    first = _start(redis_server, pebble, tmp_path, https_port, reuse_port=True)
    try:
        second = _start(redis_server, pebble, tmp_path, https_port, reuse_port=True)
        try:
            yield https_port
        finally:
            second.stop()
    finally:
        first.stop()


async def test_issued_through_real_data_plane_and_served_by_it(
    api_with_worker: httpx.AsyncClient, real_data_plane: int, pebble: Pebble
) -> None:
    created = await api_with_worker.post(
        CERTS, json={"cert_name": "real", "domains": ["real.example.com"]}, headers=ADMIN
    )
    assert created.status_code == 201, created.text
    body = await wait_for_status(api_with_worker, "real", {"active", "failed"})
    assert body["status"] == "active", body["error"]

    root = pebble.root_pem()
    deadline = time.monotonic() + 10
    while True:
        peer = await handshake(real_data_plane, "real.example.com")
        if peer.serial == body["serial"] or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert peer.serial == body["serial"]
    verified = await handshake(real_data_plane, "real.example.com", root)
    assert verified.alpn == "http/1.1"
    assert (await handshake(real_data_plane, "nobody.example.com")).common_name == "fallback.test.localhost"


async def test_two_replicas_answer_challenges_for_a_multi_domain_certificate(
    api_with_worker: httpx.AsyncClient, two_replicas: int, pebble: Pebble
) -> None:
    # Pebble validates every name on its own connections; the kernel spreads them over both replicas, and
    # whichever one is reached must answer from the shared Redis.
    domains = [f"r{i}.example.com" for i in range(6)]
    created = await api_with_worker.post(
        CERTS, json={"cert_name": "multi", "domains": domains}, headers=ADMIN
    )
    assert created.status_code == 201, created.text
    body = await wait_for_status(api_with_worker, "multi", {"active", "failed"})
    assert body["status"] == "active", body["error"]
    root = pebble.root_pem()
    for _ in range(4):  # new connections land on either replica; each must serve the new certificate
        deadline = time.monotonic() + 10
        while True:
            peer = await handshake(two_replicas, "r3.example.com")
            if peer.serial == body["serial"] or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert peer.serial == body["serial"]
    assert (await handshake(two_replicas, "r0.example.com", root)).alpn == "http/1.1"
