"""Upstream HTTPS (verified by default, custom CA bundle, per-proxy opt-out) and HTTP/1.1 details:
pipelining and Expect: 100-continue."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
import redis

from tests.data_plane.backends import HttpBackend
from tests.data_plane.conftest import DataPlane
from tests.data_plane.helpers import configure, get, proxy_to, raw_exchange
from tests.data_plane.tls_material import make_tls

pytestmark = pytest.mark.proxy


def test_upstream_tls_verification(data_plane: DataPlane, redis_sync: redis.Redis, tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "tls")
    backend = HttpBackend(tls.server_context)
    try:
        configure(
            redis_sync,
            data_plane,
            [
                proxy_to(backend.url, "verified.test", upstream_ca_bundle_pem=tls.ca_pem),
                proxy_to(backend.url, "untrusted.test"),
                proxy_to(backend.url, "optout.test", verify_upstream_tls=False),
            ],
        )
        status, _, body = get(data_plane, "/echo", host="verified.test")
        assert status == 200 and json.loads(body)["backend_port"] == backend.port
        status, _, _ = get(data_plane, "/echo", host="untrusted.test")
        assert status == 502  # the test CA is not in the system store
        assert get(data_plane, "/echo", host="optout.test")[0] == 200
    finally:
        backend.close()


def test_pipelined_requests_are_answered_in_order(
    data_plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    configure(redis_sync, data_plane, [proxy_to(http_backend.url)])
    data = raw_exchange(
        data_plane,
        b"GET /status/201 HTTP/1.1\r\nHost: app.test\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /status/202 HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    )
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", data)
    assert statuses == [b"201", b"200", b"202"]
    assert b'"body": "abc"' in data


def test_pipelined_smuggling_attempt_is_caught(
    data_plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    """A valid first request followed by a malformed one: the second is refused, never forwarded."""
    configure(redis_sync, data_plane, [proxy_to(http_backend.url)])
    data = raw_exchange(
        data_plane,
        b"GET /status/201 HTTP/1.1\r\nHost: app.test\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    )
    assert data.startswith(b"HTTP/1.1 201 ")
    assert b"HTTP/1.1 400 " in data
    assert [r["target"] for r in http_backend.requests] == ["/status/201"]


def test_expect_100_continue(
    data_plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    configure(redis_sync, data_plane, [proxy_to(http_backend.url)])
    with socket.create_connection(("127.0.0.1", data_plane.http_port), timeout=5) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n"
            b"Connection: close\r\n\r\n"
        )
        interim = sock.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 ")
        sock.sendall(b"hello")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert b"HTTP/1.1 200 " in data and b'"body": "hello"' in data
    assert "expect" not in {name for name, _ in http_backend.requests[0]["headers"]}
