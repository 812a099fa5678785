"""An h11 connection bound to an asyncio transport, read on demand: the IO shell both sides of the proxy use.

Reading is pull-based: bytes go into h11 as they arrive, and when nobody is waiting for an event the transport
stops reading, so the peer's TCP window closes and back-pressure reaches it. Writing respects the transport's
water marks: `drain()` waits while the write buffer is above the high mark. A proxy loop that reads one side
and writes the other therefore never holds more than about one read chunk plus one write buffer per direction.

After a protocol switch (WebSocket) the channel becomes a raw tunnel to a peer channel with the same
back-pressure pairing (a full peer write buffer pauses this side's reading). A tunnel passes EOF on as a
half-close (the other direction may still carry data), and once both directions have ended, or one side
cannot be half-closed, it closes both sockets: nothing else would.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, cast

import h11

WRITE_HIGH_WATER_BYTES = 256 * 1024
WRITE_LOW_WATER_BYTES = 64 * 1024


class ChannelClosed(ConnectionError):
    """The peer closed or reset the connection."""


class ChannelTimeout(TimeoutError):
    """No bytes arrived within the read deadline."""


class HttpChannel(asyncio.Protocol):
    __slots__ = (
        "_body_remaining",
        "_body_sink",
        "_body_source",
        "_drain_waiter",
        "_out",
        "_read_waiter",
        "_reading",
        "_write_paused",
        "body_overrun",
        "body_relayed",
        "bytes_received",
        "closed",
        "conn",
        "idle_since",
        "in_pool",
        "loop",
        "on_close",
        "peer_address",
        "tls",
        "transport",
        "tunnel_peer",
        "tunnel_read_ended",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        role: type[h11.SERVER] | type[h11.CLIENT],
        *,
        max_head_bytes: int = 16384,
    ) -> None:
        self.loop = loop
        self.conn = h11.Connection(role, max_incomplete_event_size=max_head_bytes)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.bytes_received = 0
        self.peer_address: tuple[str, int] = ("", 0)
        self.in_pool = False
        self.tls = False
        self.idle_since = 0.0
        self.tunnel_peer: HttpChannel | None = None
        self.tunnel_read_ended = False  # in tunnel mode: this side's peer has sent EOF
        self.on_close: Any = None
        self._reading = True
        self._write_paused = False
        self._read_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        # Bytes from send() wait here until the next await point, so a head and a small body leave in one
        # write (one syscall, one TCP segment) instead of three.
        self._out: list[bytes] = []
        # Counted body relay (relay_body): bytes go straight from this transport to the sink's.
        self._body_sink: HttpChannel | None = None
        self._body_source: HttpChannel | None = None
        self._body_remaining = 0
        self.body_overrun = False
        self.body_relayed = 0

    # asyncio.Protocol callbacks -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self.transport = transport = cast(asyncio.Transport, transport)
        transport.set_write_buffer_limits(WRITE_HIGH_WATER_BYTES, WRITE_LOW_WATER_BYTES)
        self.tls = transport.get_extra_info("sslcontext") is not None
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # A head and its body go out as separate writes; Nagle + delayed ACK would stall the second.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer_address = (str(peer[0]), int(peer[1]))

    def data_received(self, data: bytes) -> None:
        self.bytes_received += len(data)
        if self._body_sink is not None:
            self._relay_chunk(data)
            return
        peer = self.tunnel_peer
        if peer is not None:
            if peer.transport is not None and not peer.closed:
                peer.transport.write(data)
                if peer._write_paused:
                    self._pause_reading()
            return
        if self.in_pool:
            # An idle pooled upstream connection must stay silent; anything it sends makes it unusable.
            self.abort()
            return
        self.conn.receive_data(data)
        waiter = self._read_waiter
        if waiter is not None:
            self._read_waiter = None
            if not waiter.done():
                waiter.set_result(None)
        else:
            self._pause_reading()

    def eof_received(self) -> bool:
        # A TLS transport closes after EOF whatever we answer (and asyncio warns on True), so only a plain
        # TCP transport is kept half-open.
        return self._on_eof() and not self.tls

    def _on_eof(self) -> bool:
        if self._body_sink is not None:
            # The peer closed before the last byte its Content-Length promised.
            self._wake_reader(ChannelClosed("connection closed mid-body"))
            return True
        if self.tunnel_peer is not None:
            return self._end_tunnel_direction()
        if self.in_pool:
            return False
        self.conn.receive_data(b"")
        self._wake_reader(None)
        # Keep the transport open: a client may half-close after its request and still read the response.
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake_reader(ChannelClosed(str(exc) if exc else "connection closed"))
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_exception(ChannelClosed("connection closed"))
        peer = self.tunnel_peer
        if peer is not None:
            peer.close()
        if self.on_close is not None:
            self.on_close(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)
        # In tunnel or body-relay mode the other side paused its reading on our full buffer.
        for other in (self.tunnel_peer, self._body_source):
            if other is not None and not other.closed:
                other._resume_reading()

    # Reading -------------------------------------------------------------------------------------------

    def _wake_reader(self, exc: Exception | None) -> None:
        waiter = self._read_waiter
        if waiter is not None:
            self._read_waiter = None
            if not waiter.done():
                if exc is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(exc)

    def _pause_reading(self) -> None:
        if self._reading and self.transport is not None and not self.closed:
            self._reading = False
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if not self._reading and self.transport is not None and not self.closed:
            self._reading = True
            self.transport.resume_reading()

    async def wait_for_data(
        self, timeout_seconds: float | None, also_flush: HttpChannel | None = None
    ) -> None:
        """Wait for more bytes or EOF; ChannelTimeout after timeout_seconds, ChannelClosed on loss."""
        if self._out:
            self.flush()
        if also_flush is not None and also_flush._out:
            # About to block on this side: what is queued for the other side must not wait with us (SSE head).
            also_flush.flush()
        if self.closed:
            raise ChannelClosed("connection closed")
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._read_waiter = waiter
        self._resume_reading()
        if timeout_seconds is None:
            await waiter
            return
        timer = self.loop.call_later(timeout_seconds, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            if self._read_waiter is waiter:
                self._read_waiter = None

    async def next_event(self, timeout_seconds: float | None, also_flush: HttpChannel | None = None) -> Any:
        """The next h11 event, raises h11.RemoteProtocolError, ChannelClosed, ChannelTimeout."""
        conn = self.conn
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            if conn.their_state is h11.ERROR:
                raise ChannelClosed("protocol error")
            await self.wait_for_data(timeout_seconds, also_flush)

    # Counted body relay ---------------------------------------------------------------------------------

    async def relay_body(self, sink: HttpChannel, length: int, timeout_seconds: float | None) -> None:
        """Copy the next `length` bytes this peer sends straight to `sink`'s transport, bypassing h11.

        For a body framed by Content-Length on both sides (the head was already queued for the sink and
        h11 has not yet returned any of the body), h11 would only copy each chunk twice and wrap it in
        events. `body_relayed` counts the bytes passed on, also when this raises. Afterwards h11 is
        told the body ended (`body_received` / `body_sent`), so its state machines stay exact. Bytes past
        `length` are not forwarded: `body_overrun` is set and the connection must not be reused.
        `timeout_seconds` bounds the silence between chunks, not time spent waiting for a slow sink.
        Raises ChannelTimeout, or ChannelClosed when this peer closes early or the connection is lost."""
        self.body_relayed = 0
        if length <= 0:
            return
        # What h11 already buffered (typically the whole of a small body that arrived with its head) goes
        # first, queued behind the sink's pending head so both leave in one write. Bytes past `length` stay
        # in h11's buffer, where the pool's trailing-data check sees them.
        buffered = self.conn._receive_buffer.maybe_extract_at_most(length)
        if buffered:
            sink._out.append(bytes(buffered))
            self.body_relayed = len(buffered)
            length -= len(buffered)
            if not length:
                return
        self._body_sink = sink
        self._body_remaining = length
        sink._body_source = self
        try:
            while self._body_remaining:
                before = self.bytes_received
                try:
                    await self.wait_for_data(timeout_seconds, sink)
                except ChannelTimeout:
                    # A slow sink pauses our reading; only our peer's silence counts against the deadline.
                    if self.bytes_received == before and not sink._write_paused:
                        raise
        finally:
            self._body_sink = None
            sink._body_source = None

    def _relay_chunk(self, data: bytes) -> None:
        sink = self._body_sink
        assert sink is not None
        remaining = self._body_remaining
        if len(data) > remaining:
            data = data[:remaining]
            self.body_overrun = True
        self._body_remaining = remaining - len(data)
        self.body_relayed += len(data)
        if sink.transport is not None and not sink.closed:
            if sink._out:
                sink.flush()
            sink.transport.write(data)
        if not self._body_remaining:
            self._pause_reading()
            self._wake_reader(None)
        elif sink._write_paused:
            self._pause_reading()

    def body_received(self) -> None:
        """h11 bookkeeping after relay_body: their message ended (its reader is not consulted)."""
        self._advance(self.conn.their_role, _END_OF_MESSAGE)

    def body_sent(self) -> None:
        """h11 bookkeeping after writing a Content-Length body raw: our message ended."""
        self._advance(self.conn.our_role, _END_OF_MESSAGE)

    def _advance(self, role: Any, event: Any) -> None:
        conn = self.conn
        try:
            # Private, but it is the state-machine half of h11's own send() and next_event().
            conn._process_event(role, event)
        except BaseException:
            conn._process_error(role)
            raise

    # Writing -------------------------------------------------------------------------------------------

    def send(self, event: Any) -> None:
        """Serialise an h11 event; the bytes go out at the next flush (drain, read wait, close)."""
        data = self.conn.send(event)
        if data:
            self._out.append(data)

    def send_head(self, state_event: Any, wire: bytes) -> None:
        """Queue a head serialised by us (protocol.forwarding.serialise_head) instead of by h11.

        `state_event` is the same head built with `_parsed=True` and only the headers h11's state machine
        reads (Host, Content-Length, Transfer-Encoding, Connection), so h11 tracks the exchange and frames the
        body exactly as if it had written the head itself, without re-validating every header."""
        conn = self.conn
        if conn.our_state is h11.ERROR:
            raise h11.LocalProtocolError("Can't send data when our state is ERROR")
        self._advance(conn.our_role, state_event)
        self._out.append(wire)

    def flush(self) -> None:
        out = self._out
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            if self.transport is not None and not self.closed:
                self.transport.write(data)

    def write_raw(self, data: bytes) -> None:
        if self._out:
            self.flush()
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    async def drain(self) -> None:
        if self._out:
            self.flush()
        if self.closed:
            raise ChannelClosed("connection closed")
        if not self._write_paused:
            return
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._drain_waiter = waiter
        await waiter

    # Tunnel and lifecycle ------------------------------------------------------------------------------

    def start_tunnel(self, peer: HttpChannel) -> None:
        """Relay raw bytes to `peer` from now on (after a 101 Switching Protocols). An EOF that arrived
        while this side was still speaking HTTP is passed on now."""
        self.tunnel_peer = peer
        if self.conn.trailing_data[1]:
            self._end_tunnel_direction()
        self._resume_reading()

    def _end_tunnel_direction(self) -> bool:
        """This side sent EOF: half-close the peer's side, or close both once the other direction has ended
        too (or the peer cannot be half-closed). Returns whether this transport stays open."""
        peer = self.tunnel_peer
        assert peer is not None
        self.tunnel_read_ended = True
        transport = peer.transport
        if peer.tunnel_read_ended or peer.closed or transport is None or not transport.can_write_eof():
            self.close()
            peer.close()
            return False
        transport.write_eof()
        return True

    def close(self) -> None:
        if self._out:
            self.flush()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


_END_OF_MESSAGE = h11.EndOfMessage()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(ChannelTimeout("read timed out"))
