"""Server-sent events through the proxy: relayed event by event (< 50 ms), no read timeout while open,
`X-Accel-Buffering: no`, never compressed, and untouched by config changes."""

from __future__ import annotations

import socket
import time

import pytest
import redis

from tests.data_plane.backends import HttpBackend
from tests.data_plane.conftest import DataPlane
from tests.data_plane.helpers import configure, proxy_to
from tests.data_plane.redis_config import write_config

pytestmark = pytest.mark.proxy


def _read_until(sock: socket.socket, marker: bytes, buffer: bytearray) -> bytes:
    while marker not in buffer:
        chunk = sock.recv(65536)
        assert chunk, f"stream closed before {marker!r}; got {bytes(buffer)!r}"
        buffer += chunk
    end = buffer.index(marker) + len(marker)
    out = bytes(buffer[:end])
    del buffer[:end]
    return out


def test_sse_event_by_event(
    data_plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    # A read timeout far shorter than the gaps between events: it must not apply to an open SSE stream.
    configure(redis_sync, data_plane, [proxy_to(http_backend.url, read_timeout_seconds=0.3)])
    with socket.create_connection(("127.0.0.1", data_plane.http_port), timeout=5) as sock:
        sock.sendall(
            b"GET /sse HTTP/1.1\r\nHost: app.test\r\nAccept: text/event-stream\r\n"
            b"Accept-Encoding: gzip\r\n\r\n"
        )
        buffer = bytearray()
        head = _read_until(sock, b"\r\n\r\n", buffer).lower()
        assert head.startswith(b"http/1.1 200")
        assert b"content-type: text/event-stream" in head
        assert b"x-accel-buffering: no" in head
        assert b"content-encoding" not in head
        deadline = time.monotonic() + 5
        while http_backend.sse_streams == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        for i in range(5):
            started = time.monotonic()
            http_backend.push_event(f"event-{i}")
            _read_until(sock, f"data: event-{i}\n\n".encode(), buffer)
            elapsed = time.monotonic() - started
            assert elapsed < 0.05, f"event {i} took {elapsed * 1000:.1f} ms"
            if i == 1:
                time.sleep(0.7)  # longer than read_timeout_seconds: the stream must stay open
            if i == 2:
                version = write_config(redis_sync, proxies=[proxy_to(http_backend.url, "other.test")])
                data_plane.wait_for_version(version)
        http_backend.end_sse()
        _read_until(sock, b"0\r\n\r\n", buffer)  # the chunked stream ends cleanly


def _upstream_connections(port: int) -> int:
    import subprocess

    out = subprocess.run(
        ["ss", "-Htn", "state", "established", f"( dport = :{port} )"], capture_output=True, text=True
    ).stdout
    return len([line for line in out.splitlines() if line.strip()])


def test_client_leaving_an_idle_sse_stream_releases_the_upstream(
    data_plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    configure(redis_sync, data_plane, [proxy_to(http_backend.url)])
    sock = socket.create_connection(("127.0.0.1", data_plane.http_port), timeout=5)
    sock.sendall(b"GET /sse HTTP/1.1\r\nHost: app.test\r\n\r\n")
    _read_until(sock, b"\r\n\r\n", bytearray())
    assert _upstream_connections(http_backend.port) == 1
    sock.close()  # the upstream stays silent: only the client's departure can end the relay
    deadline = time.monotonic() + 5
    while _upstream_connections(http_backend.port) != 0:
        assert time.monotonic() < deadline, "upstream connection kept after the client left"
        time.sleep(0.05)
