"""Fixtures for data-plane tests: a real `python -m data_plane` subprocess on free ports, real backends."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import REPO_ROOT
from tests.data_plane.backends import HttpBackend, WebSocketBackend
from tests.harness.prometheus import sample_value
from tests.harness.services import RedisServer, ServiceProcess, free_port, port_open


@dataclass
class DataPlane:
    http_port: int
    proxy_port: int
    internal_port: int
    service: ServiceProcess
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def health(self) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.internal_port}/health", timeout=2) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.internal_port}/metrics", timeout=2) as resp:
            return str(resp.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        """One sample of this process's /metrics; a missing series fails the test."""
        value = sample_value(self.metrics(), name, **labels)
        assert value is not None, f"no {name}{labels} in /metrics of :{self.internal_port}"
        return value

    def wait_for_version(self, version: int, timeout: float = 5.0) -> None:
        """Poll /health until it reports `version`; a listener not accepting yet (a `--workers` worker
        still starting) counts as not there yet, until the deadline."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                status, body = self.health()
            except urllib.error.URLError as exc:
                last = exc
            else:
                last = (status, body)
                if body.get("config_version", 0) >= version:
                    return
            time.sleep(0.01)
        raise AssertionError(f"data plane did not reach config version {version}: {last}")


def start_data_plane(
    redis_server: RedisServer,
    workdir: Path,
    extra_env: dict[str, str] | None = None,
    args: list[str] | None = None,
) -> DataPlane:
    http_port, proxy_port, internal_port = free_port(), free_port(), free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "MHP_ENV_FILE": os.devnull,
        "REDIS_URL": redis_server.url,
        "REDIS_PASSWORD": redis_server.password,
        "BIND_HOST": "127.0.0.1",
        "HTTP_PORT": str(http_port),
        "PROXY_PROTOCOL_PORT": str(proxy_port),
        "INTERNAL_HOST": "127.0.0.1",
        "INTERNAL_PORT": str(internal_port),
        "LOG_LEVEL": "INFO",
        "PYTHONPATH": str(REPO_ROOT),
        **(extra_env or {}),
    }
    service = ServiceProcess(
        name="data-plane",
        argv=[sys.executable, "-m", "data_plane", *(args or [])],
        log_path=workdir / f"data-plane-{http_port}.log",
        ready=lambda: port_open("127.0.0.1", internal_port) and port_open("127.0.0.1", http_port),
        env=env,
        cwd=REPO_ROOT,
    )
    service.start()
    return DataPlane(http_port, proxy_port, internal_port, service, extra_env or {})


@pytest.fixture
def redis_sync(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url, password=redis_server.password, decode_responses=True)
    client.flushall()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def data_plane(redis_sync: redis.Redis, redis_server: RedisServer, tmp_path: Path) -> Iterator[DataPlane]:
    started = start_data_plane(redis_server, tmp_path)
    try:
        yield started
    finally:
        started.service.stop()


@pytest.fixture
def tls_plane(
    redis_sync: redis.Redis, redis_server: RedisServer, tmp_path: Path
) -> Iterator[tuple[DataPlane, int]]:
    """A data plane with HTTPS on; yields it and its HTTPS port (see tests/data_plane/tls_plane.py)."""
    from tests.data_plane.tls_plane import start_tls_plane  # it imports this module

    started, https_port = start_tls_plane(redis_server, tmp_path)
    try:
        yield started, https_port
    finally:
        started.service.stop()


@pytest.fixture
def http_backend() -> Iterator[HttpBackend]:
    backend = HttpBackend()
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture
def ws_backend() -> Iterator[WebSocketBackend]:
    backend = WebSocketBackend()
    try:
        yield backend
    finally:
        backend.close()


# The protected-proxy fixtures (`signer`, `plane`) for the tests that attack one; imported last because that
# module uses DataPlane and start_data_plane from here.
from tests.data_plane.protected_plane import plane, signer  # noqa: E402, F401
