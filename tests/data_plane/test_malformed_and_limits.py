"""Malformed requests and limits against a real data plane: 400/431/408 and a closed connection, and nothing
ever reaches the upstream."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import redis

from tests.data_plane.backends import HttpBackend
from tests.data_plane.conftest import DataPlane, start_data_plane
from tests.data_plane.helpers import configure, proxy_to, raw_exchange
from tests.data_plane.test_request_head import BAD
from tests.harness.services import RedisServer

pytestmark = pytest.mark.proxy

E2E_BAD = {
    **{name: head.replace(b"Host: a", b"Host: app.test") + b"hello" for name, head in BAD.items()},
    "bare lf everywhere": b"GET /echo HTTP/1.1\nHost: app.test\n\n",
    "no host http/1.1": b"GET /echo HTTP/1.1\r\nX: y\r\n\r\n",
    "two hosts": b"GET /echo HTTP/1.1\r\nHost: app.test\r\nHost: other.test\r\n\r\n",
    "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    "bad chunk size": b"POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"zz\r\nhello\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(E2E_BAD))
def test_malformed_gets_400_and_close_and_never_reaches_upstream(
    name: str, data_plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    configure(redis_sync, data_plane, [proxy_to(http_backend.url)])
    answer = raw_exchange(data_plane, E2E_BAD[name])
    assert answer.startswith(b"HTTP/1.1 400 "), (name, answer[:200])
    assert answer.count(b"HTTP/1.1") == 1  # and the connection was closed after it
    if name != "bad chunk size":  # there the head is valid; the upstream sees a request whose body is cut
        assert http_backend.requests == []
    status, _ = data_plane.health()
    assert status == 200  # the process survived


def test_header_bytes_limit_431(
    data_plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    configure(redis_sync, data_plane, [proxy_to(http_backend.url)])
    big = b"GET /echo HTTP/1.1\r\nHost: app.test\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
    answer = raw_exchange(data_plane, big)
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert http_backend.requests == []


@pytest.fixture
def strict_plane(redis_sync: redis.Redis, redis_server: RedisServer, tmp_path: Path) -> DataPlane:
    plane = start_data_plane(
        redis_server,
        tmp_path,
        {
            "DP_HEADER_READ_TIMEOUT_SECONDS": "0.5",
            "DP_KEEPALIVE_IDLE_TIMEOUT_SECONDS": "0.5",
            "DP_MAX_CONNECTIONS": "3",
        },
    )
    yield plane  # type: ignore[misc]
    plane.service.stop()


def test_slowloris_header_timeout_408(
    strict_plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    configure(redis_sync, strict_plane, [proxy_to(http_backend.url)])
    with socket.create_connection(("127.0.0.1", strict_plane.http_port), timeout=5) as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: app.test\r\n")
        for _ in range(3):  # trickling bytes does not extend the head deadline
            time.sleep(0.2)
            try:
                sock.sendall(b"X-A: b\r\n")
            except OSError:
                break
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert sock.recv(65536) == b""
    assert http_backend.requests == []


def test_keepalive_idle_timeout_closes(
    strict_plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    configure(redis_sync, strict_plane, [proxy_to(http_backend.url)])
    with socket.create_connection(("127.0.0.1", strict_plane.http_port), timeout=5) as sock:
        sock.sendall(b"GET /status/204 HTTP/1.1\r\nHost: app.test\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 204 ")
        # Idle past the keep-alive timeout: the proxy closes without sending anything.
        assert sock.recv(65536) == b""


def test_max_connections_503(
    strict_plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    configure(redis_sync, strict_plane, [proxy_to(http_backend.url)])
    held = [socket.create_connection(("127.0.0.1", strict_plane.http_port), timeout=5) for _ in range(3)]
    try:
        time.sleep(0.1)
        answer = raw_exchange(strict_plane, b"GET /echo HTTP/1.1\r\nHost: app.test\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 503 ")
    finally:
        for sock in held:
            sock.close()
