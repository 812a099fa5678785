"""The HTTPS listeners: our own accept loop, so every TLS handshake has an outcome we can count and log.

`loop.create_server(ssl=...)` drops a failed handshake without a word (ssl.SSLError is an OSError, which
asyncio and uvloop report only in debug mode), so a client speaking plain HTTP to port 443 or a scanner
sending garbage would leave no trace. Here each accepted socket goes to `loop.connect_accepted_socket(...,
ssl=context)`, which returns once the handshake is done or raises why it failed. Every outcome is counted
(`mhp_tls_handshakes_total{result}`) and failures are logged at INFO with the peer and the reason,
rate-limited so a scan cannot flood the log. The socket is closed either way; nothing is written back
(there is no TLS session to write an HTTP error into).

With `proxy_header=True` (the PROXY_PROTOCOL_TLS_PORT listener: an L4 load balancer passing TLS through)
the connection must start with a PROXY v1/v2 header from a trusted peer, read before the handshake. It is
read without consuming a byte past its end (MSG_PEEK, then recv of exactly the header), so the ClientHello
that follows stays in the kernel buffer for the TLS layer.

Concurrent handshakes per listener are capped at `limits.max_connections`: beyond that a new socket is
closed at once (counted as `overloaded`), so a handshake flood costs sockets, not memory.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time

from data_plane.io.client_connection import ClientConnection
from data_plane.metrics import TlsHandshakeResult
from data_plane.protocol.proxy_protocol import (
    MAX_PROXY_HEADER_BYTES,
    ProxyProtocolError,
    parse_proxy_header,
)
from data_plane.runtime import Runtime

log = logging.getLogger(__name__)

# At most this many failure lines per window; the rest are counted and summarised in one line.
LOG_BURST = 20
LOG_WINDOW_SECONDS = 10.0
# Connections accepted per wake-up of a listening socket, and the pause after accept() itself fails (EMFILE).
ACCEPT_BATCH = 64
ACCEPT_BACKOFF_SECONDS = 0.1

# OpenSSL reasons meaning "these bytes are not TLS at all" (as opposed to TLS we refuse or that fails).
_NOT_TLS_REASONS = frozenset({"WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "PACKET_LENGTH_TOO_LONG"})


class _ProxyHeaderRefused(Exception):
    pass


def classify_handshake_error(exc: BaseException, timeout_seconds: float) -> tuple[TlsHandshakeResult, str]:
    """A failed handshake's metric label and a one-line reason for the log."""
    if isinstance(exc, ssl.SSLEOFError):
        return "closed", "client closed the connection during the handshake"
    if isinstance(exc, ssl.SSLError):
        # `reason` is OpenSSL's short code; an SSLError raised by Python code may lack it.
        reason = getattr(exc, "reason", None) or type(exc).__name__
        if reason == "HTTP_REQUEST":
            return "plain_http", "plain HTTP request sent to the HTTPS port"
        if reason in _NOT_TLS_REASONS:
            return "not_tls", f"not a TLS ClientHello ({reason})"
        return "tls_error", f"TLS error: {reason}"
    if isinstance(exc, TimeoutError) or (
        isinstance(exc, ConnectionAbortedError) and "taking longer" in str(exc)
    ):
        return "timeout", f"handshake not completed within {timeout_seconds:g}s"
    if isinstance(exc, (ConnectionError, EOFError)):
        return "closed", "client closed the connection during the handshake"
    return "tls_error", f"{type(exc).__name__}: {exc}"


class _FailureLog:
    """INFO lines for failed handshakes, at most LOG_BURST per window, then one summary of the rest."""

    __slots__ = ("_logged", "_suppressed", "_window_start")

    def __init__(self) -> None:
        self._window_start = 0.0
        self._logged = 0
        self._suppressed = 0

    def failure(self, peer: str, result: str, reason: str) -> None:
        now = time.monotonic()
        if now - self._window_start >= LOG_WINDOW_SECONDS:
            if self._suppressed:
                log.info(
                    "%d more failed TLS handshakes not logged in the last %.0fs "
                    "(see mhp_tls_handshakes_total)",
                    self._suppressed,
                    LOG_WINDOW_SECONDS,
                )
            self._window_start = now
            self._logged = 0
            self._suppressed = 0
        if self._logged < LOG_BURST:
            self._logged += 1
            log.info("TLS handshake from %s failed (%s): %s", peer, result, reason)
        else:
            self._suppressed += 1


def bound_sockets(host: str, port: int, *, reuse_port: bool, backlog: int) -> list[socket.socket]:
    """Listening, non-blocking sockets for every address `host` resolves to (as create_server binds)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _name, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class TlsListener:
    """Accepts on bound sockets; each connection is handshaken, then served by a ClientConnection."""

    def __init__(
        self,
        runtime: Runtime,
        context: ssl.SSLContext,
        sockets: list[socket.socket],
        *,
        proxy_header: bool = False,
    ) -> None:
        self._runtime = runtime
        self._loop = runtime.loop
        self._context = context
        self._sockets = sockets
        self._proxy_header = proxy_header
        self._handshake_seconds = runtime.limits.tls_handshake_timeout_seconds
        self._max_pending = runtime.limits.max_connections
        self._pending: set[asyncio.Task[None]] = set()
        self._failures = _FailureLog()
        counter = runtime.metrics.tls_handshakes_total
        self._ok = counter.labels(result="ok")
        self._closed = False
        self._resume_handles: list[asyncio.TimerHandle] = []
        for sock in sockets:
            self._loop.add_reader(sock.fileno(), self._accept_ready, sock)

    def close(self) -> None:
        """Stop accepting and abandon handshakes in progress (established connections drain elsewhere)."""
        if self._closed:
            return
        self._closed = True
        for handle in self._resume_handles:
            handle.cancel()
        for sock in self._sockets:
            self._loop.remove_reader(sock.fileno())
        for task in list(self._pending):
            task.cancel()
        for sock in self._sockets:
            sock.close()

    def _accept_ready(self, listening: socket.socket) -> None:
        """The listening socket is readable: accept what is queued (at most ACCEPT_BATCH per wake-up, so one
        busy listener cannot starve the loop) and start a handshake task for each.

        A reader callback rather than `await loop.sock_accept()` in a loop: uvloop's sock_accept registers
        and removes the reader around every single accept (two epoll_ctl calls and a future per
        connection, about a tenth of a new TLS connection's cost)."""
        loop = self._loop
        pending = self._pending
        for _ in range(ACCEPT_BATCH):
            try:
                sock, address = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: back off instead of spinning
                log.warning("accept on the HTTPS listener failed: %s", exc)
                self._pause_accepting(listening)
                return
            if len(pending) >= self._max_pending:
                self._count("overloaded")
                sock.close()
                continue
            sock.setblocking(False)
            task = loop.create_task(self._handshake(sock, address[0]))
            pending.add(task)
            task.add_done_callback(pending.discard)

    def _pause_accepting(self, listening: socket.socket) -> None:
        fd = listening.fileno()
        self._loop.remove_reader(fd)

        def resume() -> None:
            self._resume_handles.remove(handle)
            if not self._closed:
                self._loop.add_reader(fd, self._accept_ready, listening)

        handle = self._loop.call_later(ACCEPT_BACKOFF_SECONDS, resume)
        self._resume_handles.append(handle)

    async def _handshake(self, sock: socket.socket, peer: str) -> None:
        runtime = self._runtime
        client_address: str | None = None
        try:
            # No TCP_NODELAY here: uvloop's transport sets it (tests/data_plane/test_event_loop_contract.py).
            if self._proxy_header:
                client_address = await self._read_proxy_header(sock, peer)
            await self._loop.connect_accepted_socket(
                lambda: ClientConnection(runtime, scheme=b"https", client_address=client_address),
                sock,
                ssl=self._context,
                ssl_handshake_timeout=self._handshake_seconds,
            )
        except asyncio.CancelledError:
            sock.close()
            raise
        except _ProxyHeaderRefused as exc:
            sock.close()
            self._count("proxy_header")
            self._failures.failure(peer, "proxy_header", str(exc))
        except Exception as exc:
            sock.close()
            result, reason = classify_handshake_error(exc, self._handshake_seconds)
            self._count(result)
            self._failures.failure(client_address or peer, result, reason)
        else:
            self._ok.inc()

    def _count(self, result: TlsHandshakeResult) -> None:
        self._runtime.metrics.tls_handshakes_total.labels(result=result).inc()

    async def _read_proxy_header(self, sock: socket.socket, peer: str) -> str | None:
        """The client address a trusted load balancer's PROXY header names (None: use the socket's).

        Peeks at what has arrived; while the header is incomplete every peeked byte belongs to it and is
        consumed, and once complete exactly its length is consumed, so the TLS bytes after it stay unread."""
        if not self._runtime.trusted_peers(peer):
            raise _ProxyHeaderRefused("PROXY protocol connection from an untrusted address")
        received = bytearray()
        deadline = self._loop.time() + self._handshake_seconds
        while True:
            await self._readable(sock, deadline)
            peeked = sock.recv(MAX_PROXY_HEADER_BYTES - len(received), socket.MSG_PEEK)
            if not peeked:
                raise _ProxyHeaderRefused("connection closed inside the PROXY header")
            try:
                parsed = parse_proxy_header(received + peeked)
            except ProxyProtocolError as exc:
                raise _ProxyHeaderRefused(f"malformed PROXY header: {exc}") from None
            if parsed is not None:
                header, consumed = parsed
                sock.recv(consumed - len(received))
                return header.source[0] if header.source is not None else None
            received += sock.recv(len(peeked))
            if len(received) >= MAX_PROXY_HEADER_BYTES:
                raise _ProxyHeaderRefused("oversized PROXY header")

    async def _readable(self, sock: socket.socket, deadline: float) -> None:
        loop = self._loop
        ready: asyncio.Future[None] = loop.create_future()
        fd = sock.fileno()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(fd, wake)
        try:
            await asyncio.wait_for(ready, max(0.0, deadline - loop.time()))
        except TimeoutError:
            raise _ProxyHeaderRefused("PROXY header not received in time") from None
        finally:
            loop.remove_reader(fd)
