"""What the data plane takes from its event loop (uvloop: data_plane.__main__ always runs on it) without
asking again: every TCP transport it is handed has TCP_NODELAY set (a response head and its body can go out
as separate writes, and Nagle + delayed ACK would hold the second). io.stream and io.tls_listener rely on it
instead of setting the option per connection; this fails if uvloop stops doing it. (asyncio's own loop does
not for a TLS transport over an accepted socket: the data plane does not run on it.) Real sockets on
127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable

import pytest
import uvloop

from data_plane.tls.contexts import build_server_context
from data_plane.tls.self_signed import self_signed_pem


class _Capture(asyncio.Protocol):
    def __init__(self, seen: asyncio.Future[int]) -> None:
        self._seen = seen

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if not self._seen.done():
            self._seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        transport.close()


async def _nodelay_of_served_connection() -> int:
    loop = asyncio.get_running_loop()
    seen: asyncio.Future[int] = loop.create_future()
    server = await loop.create_server(lambda: _Capture(seen), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return await asyncio.wait_for(seen, 5)
    finally:
        writer.close()
        server.close()


async def _nodelay_of_accepted_tls_socket() -> int:
    loop = asyncio.get_running_loop()
    cert, key = self_signed_pem("loop.test", valid_days=1)
    server_context = build_server_context(cert.decode(), key)
    listening = socket.create_server(("127.0.0.1", 0))
    listening.setblocking(False)
    port = listening.getsockname()[1]
    client_context = ssl._create_unverified_context()
    seen: asyncio.Future[int] = loop.create_future()
    client = loop.create_task(asyncio.open_connection("127.0.0.1", port, ssl=client_context))
    accepted, _ = await loop.sock_accept(listening)
    accepted.setblocking(False)
    await loop.connect_accepted_socket(lambda: _Capture(seen), accepted, ssl=server_context)
    try:
        return await asyncio.wait_for(seen, 5)
    finally:
        _reader, writer = await client
        writer.close()
        listening.close()


@pytest.mark.parametrize("probe", [_nodelay_of_served_connection, _nodelay_of_accepted_tls_socket])
def test_uvloop_transports_come_with_tcp_nodelay(probe: Callable[[], object]) -> None:
    loop = uvloop.new_event_loop()
    try:
        assert loop.run_until_complete(probe()) != 0  # type: ignore[arg-type]
    finally:
        loop.close()
