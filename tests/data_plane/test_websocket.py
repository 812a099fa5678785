"""WebSocket relay through the proxy with the `websockets` library on both ends: text, binary, ping/pong,
fragmented and 16 MB messages, close codes, permessage-deflate negotiated end to end, invalid upgrades
refused; and sessions ended every way (close frame, FIN, RST, from either side) leave no socket behind."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import threading
import time

import pytest
import redis
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection as FrameConnection
from wsproto.events import AcceptConnection, CloseConnection, TextMessage
from wsproto.events import Request as WsRequest

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


async def _closing_backend_handler(websocket: ServerConnection) -> None:
    """Echo; `close:<code>` closes with a close frame, `fin` closes TCP without one, `rst` resets it."""
    try:
        async for message in websocket:
            if message == "fin":
                websocket.transport.close()
                return
            if message == "rst":
                websocket.transport.abort()
                return
            if isinstance(message, str) and message.startswith("close:"):
                await websocket.close(int(message.split(":", 1)[1]), "requested")
                return
            await websocket.send(message)
    except ConnectionClosed:
        return


def _read_until(sock: socket.socket, ws: WSConnection, kind: type) -> object | None:
    """Events from the socket until one of `kind` (returned), or None when the connection ends first."""
    while True:
        for event in ws.events():
            if isinstance(event, kind):
                return event
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return None
        if not data:
            return None
        ws.receive_data(data)


def _drain_to_eof(sock: socket.socket) -> bytes:
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def _websocket_session(port: int, ending: str) -> None:
    """One WebSocket session through the proxy, ended one way, by a raw-socket client (wsproto)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        ws = WSConnection(ConnectionType.CLIENT)
        if ending == "client gone before the 101":
            # Upgrade, close frame and FIN in one go: the EOF reaches the proxy while it still speaks HTTP.
            handshake = ws.send(WsRequest(host="app.test", target="/ws"))
            frames = FrameConnection(ConnectionType.CLIENT)  # frames as they will be after the 101
            sock.sendall(handshake + frames.send(CloseConnection(code=1000)))
            sock.shutdown(socket.SHUT_WR)
            assert _drain_to_eof(sock).startswith(b"HTTP/1.1 101 ")  # and then the server's close frame
            return
        sock.sendall(ws.send(WsRequest(host="app.test", target="/ws")))
        assert isinstance(_read_until(sock, ws, AcceptConnection), AcceptConnection)
        sock.sendall(ws.send(TextMessage(data="hello")))
        echoed = _read_until(sock, ws, TextMessage)
        assert isinstance(echoed, TextMessage) and echoed.data == "hello"
        if ending == "client close frame":
            sock.sendall(ws.send(CloseConnection(code=1000)))
            assert isinstance(_read_until(sock, ws, CloseConnection), CloseConnection)
            _drain_to_eof(sock)  # the server closes TCP first (RFC 6455 7.1.1)
        elif ending == "server close frame":
            sock.sendall(ws.send(TextMessage(data="close:1000")))
            closing = _read_until(sock, ws, CloseConnection)
            assert isinstance(closing, CloseConnection)
            sock.sendall(ws.send(closing.response()))
            _drain_to_eof(sock)
        elif ending == "client fin":
            sock.shutdown(socket.SHUT_WR)
            _drain_to_eof(sock)
        elif ending == "client rst":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif ending in ("server fin", "server rst"):
            sock.sendall(ws.send(TextMessage(data=ending.split()[1])))
            _drain_to_eof(sock)
    finally:
        sock.close()


def _sockets_held(pid: int, *, local_port: int, remote_port: int) -> set[str]:
    """Sockets (inodes) process `pid` holds open (from /proc: its fds and the kernel's socket tables) that
    were accepted on `local_port` or connect to `remote_port`, or that no table lists (among them a TCP
    socket whose connection has ended both ways but which nobody closed)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports: dict[str, tuple[int, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as handle:
            for line in handle.readlines()[1:]:
                fields = line.split()
                local, remote = (int(field.rsplit(":", 1)[1], 16) for field in fields[1:3])
                # A listening socket (state 0A) on local_port is the listener, not a connection.
                ports[fields[9]] = (local if fields[3] != "0A" else -1, remote)
    listed = set(ports)
    for table, inode_column in (("/proc/net/unix", 6), ("/proc/net/udp", 9), ("/proc/net/udp6", 9)):
        with open(table) as handle:
            listed.update(line.split()[inode_column] for line in handle.readlines()[1:] if line.split())
    return {
        inode
        for inode in inodes
        if inode not in listed
        or (inode in ports and (ports[inode][0] == local_port or ports[inode][1] == remote_port))
    }


ENDINGS = (
    "client close frame",
    "server close frame",
    "client fin",
    "client rst",
    "server fin",
    "server rst",
    "client gone before the 101",
)


def test_ended_websocket_sessions_leave_no_connection_open(
    data_plane: DataPlane, redis_sync: redis.Redis
) -> None:
    """100 sessions ended by either side, with a close frame, a FIN or a RST: afterwards the data plane
    holds no socket for any of them, and counts no open connection."""
    backend = WebSocketBackend(_closing_backend_handler)
    try:
        configure(redis_sync, data_plane, [proxy_to(backend.url)])
        pid = data_plane.service.pid
        # Sockets held before any session (none for these ports; an unlisted one, e.g. created but not yet
        # connected, belongs to something else) are not the sessions'.
        before = _sockets_held(pid, local_port=data_plane.http_port, remote_port=backend.port)
        for index in range(100):
            _websocket_session(data_plane.http_port, ENDINGS[index % len(ENDINGS)])
        deadline = time.monotonic() + 10
        while True:
            held = len(_sockets_held(pid, local_port=data_plane.http_port, remote_port=backend.port) - before)
            open_connections = data_plane.health()[1]["open_connections"]
            if (held == 0 and open_connections == 0) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert (held, open_connections) == (0, 0)
        assert data_plane.metric("mhp_open_connections") == 0
    finally:
        backend.close()


def test_a_tunnel_passes_a_half_close_on(data_plane: DataPlane, redis_sync: redis.Redis) -> None:
    """After the 101 the proxy relays bytes: a client that has finished sending (FIN) still gets what the
    upstream sends after seeing that FIN; only when both directions have ended are the sockets closed."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def upstream() -> None:
        conn, _ = listener.accept()
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(65536)
            key = next(
                line.split(b":", 1)[1].strip()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            conn.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            received = _drain_to_eof(conn)  # the client's bytes, then its FIN, passed on by the proxy
            conn.sendall(b"after your FIN: " + received)

    thread = threading.Thread(target=upstream, daemon=True)
    thread.start()
    try:
        configure(redis_sync, data_plane, [proxy_to(f"http://127.0.0.1:{port}")])
        with socket.create_connection(("127.0.0.1", data_plane.http_port), timeout=10) as sock:
            sock.sendall(
                b"GET /ws HTTP/1.1\r\nHost: app.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(65536)
            assert head.startswith(b"HTTP/1.1 101 ")
            sock.sendall(b"raw bytes")
            sock.shutdown(socket.SHUT_WR)
            rest = head.split(b"\r\n\r\n", 1)[1] + _drain_to_eof(sock)
        assert rest == b"after your FIN: raw bytes"
        thread.join(10)
    finally:
        listener.close()
