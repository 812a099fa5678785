"""A real data plane for the Pebble tests: `python -m data_plane` with its plain-HTTP listener on Pebble's
httpPort, so Pebble's HTTP-01 validations reach it, and HTTPS with the certificate tests' KEK."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import REPO_ROOT
from tests.harness.pebble import Pebble
from tests.harness.services import RedisServer, ServiceProcess, free_port, port_open

from .conftest import KEK_B64


@dataclass(frozen=True)
class DataPlane:
    service: ServiceProcess
    https_port: int
    internal_port: int


def start_data_plane(
    redis_server: RedisServer, pebble: Pebble, tmp_path: Path, https_port: int, *, reuse_port: bool = False
) -> DataPlane:
    """`python -m data_plane` with its plain-HTTP listener on Pebble's httpPort (so it answers HTTP-01)."""
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
    return DataPlane(service=service, https_port=https_port, internal_port=internal_port)
