"""Small client helpers for data-plane tests: configure a proxy and talk raw HTTP over a real socket."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

import redis

from shared.models import ProxyTarget, Route
from tests.data_plane.conftest import DataPlane
from tests.data_plane.redis_config import write_config


def configure(
    client: redis.Redis, plane: DataPlane, proxies: list[ProxyTarget], routes: list[Route] | None = None
) -> int:
    version = write_config(client, proxies=proxies, routes=routes or [])
    plane.wait_for_version(version)
    return version


def proxy_to(backend_url: str, hostname: str = "app.test", **kw: Any) -> ProxyTarget:
    return ProxyTarget(hostname=hostname, target_url=backend_url, **kw)


def get(
    plane: DataPlane,
    path: str,
    host: str = "app.test",
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", plane.http_port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Host": host, **(headers or {})})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def echo_headers(body: bytes) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in json.loads(body)["headers"]:
        out.setdefault(name, []).append(value)
    return out


def raw_exchange(plane: DataPlane, data: bytes, timeout: float = 5.0, port: int | None = None) -> bytes:
    """Send raw bytes, read until the server closes; returns everything received."""
    with socket.create_connection(("127.0.0.1", port or plane.http_port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
