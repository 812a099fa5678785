"""WebSocket relay through the proxy with the `websockets` library on both ends: text, binary, ping/pong,
fragmented and 16 MB messages, close codes, permessage-deflate negotiated end to end, invalid upgrades
refused."""

from __future__ import annotations

import os

import pytest
import redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.data_plane.backends import WebSocketBackend
from tests.data_plane.conftest import DataPlane
from tests.data_plane.helpers import configure, proxy_to, raw_exchange
from tests.data_plane.redis_config import write_config

pytestmark = pytest.mark.proxy


def _url(plane: DataPlane, path: str = "/ws") -> str:
    return f"ws://app.test:{plane.http_port}{path}"


def _via(plane: DataPlane) -> dict[str, object]:
    """Connect to the proxy's socket while the URL (and so the Host header) names the proxied host."""
    return {"host": "127.0.0.1", "port": plane.http_port}


async def test_websocket_relay_end_to_end(
    data_plane: DataPlane, redis_sync: redis.Redis, ws_backend: WebSocketBackend
) -> None:
    configure(redis_sync, data_plane, [proxy_to(ws_backend.url)])
    async with connect(_url(data_plane), **_via(data_plane), max_size=32 * 1024 * 1024) as ws:
        # permessage-deflate was negotiated between the client and the backend, through the proxy.
        assert ws.response is not None
        assert "permessage-deflate" in ws.response.headers.get("Sec-WebSocket-Extensions", "")
        assert "permessage-deflate" in ws_backend.request_headers[-1].get("sec-websocket-extensions", "")
        assert ws_backend.request_headers[-1]["x-forwarded-for"] == "127.0.0.1"
        await ws.send("hello")
        assert await ws.recv() == "hello"
        await ws.send(b"\x00\x01binary")
        assert await ws.recv() == b"\x00\x01binary"
        pong = await ws.ping(b"p")
        await pong
        await ws.send(["frag", "mented", " text"])
        assert await ws.recv() == "fragmented text"
        big = os.urandom(16 * 1024 * 1024)
        await ws.send(big)
        assert await ws.recv() == big
        # A config change does not disturb the open connection.
        version = write_config(redis_sync, proxies=[proxy_to(ws_backend.url, "other.test")])
        data_plane.wait_for_version(version)
        await ws.send("still here")
        assert await ws.recv() == "still here"
        await ws.send("close:4001")
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001


async def test_websocket_client_close_code_reaches_backend(
    data_plane: DataPlane, redis_sync: redis.Redis
) -> None:
    codes: list[int | None] = []

    async def record_close(websocket: object) -> None:
        try:
            async for _ in websocket:  # type: ignore[attr-defined]
                pass
        finally:
            codes.append(websocket.close_code)  # type: ignore[attr-defined]

    backend = WebSocketBackend(record_close)  # type: ignore[arg-type]
    try:
        configure(redis_sync, data_plane, [proxy_to(backend.url)])
        async with connect(_url(data_plane), **_via(data_plane)) as ws:
            await ws.close(4321, "bye")
        import asyncio

        for _ in range(100):
            if codes:
                break
            await asyncio.sleep(0.02)
        assert codes == [4321]
    finally:
        backend.close()


def test_invalid_upgrades_are_refused(
    data_plane: DataPlane, redis_sync: redis.Redis, ws_backend: WebSocketBackend
) -> None:
    configure(redis_sync, data_plane, [proxy_to(ws_backend.url)])
    base = b"GET /ws HTTP/1.1\r\nHost: app.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    bad_key = raw_exchange(
        data_plane, base + b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n\r\n"
    )
    assert bad_key.startswith(b"HTTP/1.1 400 ")
    bad_version = raw_exchange(
        data_plane, base + b"Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    assert bad_version.startswith(b"HTTP/1.1 426 ") and b"sec-websocket-version: 13" in bad_version.lower()
    no_connection = raw_exchange(
        data_plane,
        b"GET /ws HTTP/1.1\r\nHost: app.test\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    assert no_connection.startswith(b"HTTP/1.1 400 ")
    assert ws_backend.request_headers == []


async def test_backend_refusing_upgrade_is_relayed(data_plane: DataPlane, redis_sync: redis.Redis) -> None:
    from tests.data_plane.backends import HttpBackend

    backend = HttpBackend()
    try:
        configure(redis_sync, data_plane, [proxy_to(backend.url)])
        with pytest.raises(InvalidStatus) as refused:
            async with connect(_url(data_plane, "/status/403"), **_via(data_plane)):
                pass
        assert refused.value.response.status_code == 403
    finally:
        backend.close()
