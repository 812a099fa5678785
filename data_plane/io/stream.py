"""One TCP (or TLS) connection of the proxy, either side: flow control, the write queue and the raw tunnel.

Reading is pull-based: a subclass parses what arrives (`_receive`), and when nobody waits for it the transport
stops reading, so the peer's TCP window closes and back-pressure reaches it. Writing respects the transport's
water marks: `drain()` waits while the write buffer is above the high mark, and a stream that writes into
another (`feed_from`) has its reading paused while the other's buffer is full. A proxy loop that reads one
side and writes the other therefore never holds more than about one read chunk plus one write buffer per
direction.

After a protocol switch (WebSocket) two streams become a raw tunnel with the same back-pressure pairing. A
tunnel passes EOF on as a half-close (the other direction may still carry data), and once both directions
have ended, or one side cannot be half-closed, it closes both sockets: nothing else would.

The link's state is explicit (`Link`): OPEN, HALF_CLOSED (the peer sent EOF; we may still write) or CLOSED.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from typing import cast

WRITE_HIGH_WATER_BYTES = 256 * 1024
WRITE_LOW_WATER_BYTES = 64 * 1024


class ChannelClosed(ConnectionError):
    """The peer closed or reset the connection."""


class ChannelTimeout(TimeoutError):
    """No bytes arrived within the read deadline."""


class Link(enum.Enum):
    OPEN = "open"
    HALF_CLOSED = "half-closed"  # the peer sent EOF; our direction still works
    CLOSED = "closed"  # lost, closed or aborted


class Stream(asyncio.Protocol):
    __slots__ = (
        "_drain_waiter",
        "_feeder",
        "_out",
        "_read_deadline",
        "_read_timer",
        "_read_timer_at",
        "_read_waiter",
        "_reading",
        "_write_paused",
        "bytes_received",
        "link",
        "loop",
        "on_close",
        "peer_address",
        "tls",
        "transport",
        "tunnel_peer",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.link = Link.OPEN
        self.bytes_received = 0
        self.peer_address: tuple[str, int] = ("", 0)
        self.tls = False
        self.tunnel_peer: Stream | None = None
        self.on_close: Callable[[Stream], object] | None = None
        self._reading = True
        self._write_paused = False
        self._read_waiter: asyncio.Future[None] | None = None
        # The current read wait's deadline (loop time; 0.0: none) and the one timer that enforces it: armed
        # once and re-armed only when it fires early, instead of a timer made and cancelled per wait.
        self._read_deadline = 0.0
        self._read_timer: asyncio.TimerHandle | None = None
        self._read_timer_at = 0.0
        self._drain_waiter: asyncio.Future[None] | None = None
        # Bytes queued by queue() wait here until the next await point, so a head and a small body leave in
        # one write (one syscall, one TCP segment) instead of several.
        self._out: list[bytes] = []
        # The stream writing into this one outside a tunnel (a response body): resumed when we drain.
        self._feeder: Stream | None = None

    @property
    def closed(self) -> bool:
        return self.link is Link.CLOSED

    @property
    def write_paused(self) -> bool:
        return self._write_paused

    # asyncio.Protocol callbacks -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self.transport = transport = cast(asyncio.Transport, transport)
        transport.set_write_buffer_limits(WRITE_HIGH_WATER_BYTES, WRITE_LOW_WATER_BYTES)
        self.tls = transport.get_extra_info("sslcontext") is not None
        # A head and its body can go out as separate writes, so Nagle + delayed ACK would stall the second:
        # uvloop sets TCP_NODELAY on every TCP transport it makes (tests/data_plane/test_event_loop_contract).
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer_address = (str(peer[0]), int(peer[1]))

    def data_received(self, data: bytes) -> None:
        self.bytes_received += len(data)
        peer = self.tunnel_peer
        if peer is not None:
            if peer.transport is not None and peer.link is not Link.CLOSED:
                peer.transport.write(data)
                if peer._write_paused:
                    self.pause_reading()
            return
        self._receive(data)

    def eof_received(self) -> bool:
        if self.link is Link.OPEN:
            self.link = Link.HALF_CLOSED
        keep_open = self._end_tunnel_direction() if self.tunnel_peer is not None else self._receive_eof()
        # A TLS transport closes after EOF whatever we answer (and asyncio warns on True), so only a plain
        # TCP transport is kept half-open.
        return keep_open and not self.tls

    def connection_lost(self, exc: Exception | None) -> None:
        self.link = Link.CLOSED
        self._wake_reader(ChannelClosed(str(exc) if exc else "connection closed"))
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
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
        # The other side paused its reading on our full buffer.
        for other in (self.tunnel_peer, self._feeder):
            if other is not None and other.link is not Link.CLOSED:
                other.resume_reading()

    # What a subclass parses ---------------------------------------------------------------------------

    def _receive(self, data: bytes) -> None:
        """Bytes outside a tunnel (the subclass's protocol)."""
        raise NotImplementedError

    def _receive_eof(self) -> bool:
        """EOF outside a tunnel; returns whether to keep the transport open (half-closed)."""
        raise NotImplementedError

    # Reading -------------------------------------------------------------------------------------------

    def _wake_reader(self, exc: Exception | None = None) -> None:
        waiter = self._read_waiter
        if waiter is not None:
            self._read_waiter = None
            if not waiter.done():
                if exc is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(exc)

    @property
    def awaiting_data(self) -> bool:
        waiter = self._read_waiter
        return waiter is not None and not waiter.done()  # done: its task was cancelled mid-wait

    def pause_reading(self) -> None:
        if self._reading and self.transport is not None and self.link is not Link.CLOSED:
            self._reading = False
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if not self._reading and self.transport is not None and self.link is not Link.CLOSED:
            self._reading = True
            self.transport.resume_reading()

    def feed_from(self, source: Stream | None) -> None:
        """`source` writes into us (a response body): its reading resumes when our buffer drains."""
        self._feeder = source

    def wait_for_data(
        self, timeout_seconds: float | None, also_flush: Stream | None = None
    ) -> asyncio.Future[None]:
        """A future to await for more bytes or EOF; it raises ChannelTimeout after timeout_seconds and
        ChannelClosed on loss (a plain future, not a coroutine: every coroutine level between a task and the
        future it waits on is paid twice per wait)."""
        if self._out:
            self.flush()
        if also_flush is not None and also_flush._out:
            # About to block on this side: what is queued for the other side must not wait with us.
            also_flush.flush()
        if self.link is Link.CLOSED:
            raise ChannelClosed("connection closed")
        return self._reader_waiter(timeout_seconds, resume=True)

    def _reader_waiter(self, timeout_seconds: float | None, *, resume: bool) -> asyncio.Future[None]:
        """The future `_wake_reader` completes (ChannelTimeout after `timeout_seconds`); `resume` turns
        reading on."""
        loop = self.loop
        waiter: asyncio.Future[None] = loop.create_future()
        self._read_waiter = waiter
        if resume:
            self.resume_reading()
        if timeout_seconds is None:
            self._read_deadline = 0.0
        else:
            deadline = self._read_deadline = loop.time() + timeout_seconds
            if self._read_timer is None or self._read_timer_at > deadline:
                self._arm_read_timer(deadline)
        return waiter

    def _arm_read_timer(self, at: float) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
        self._read_timer = self.loop.call_at(at, self._read_timer_fired)
        self._read_timer_at = at

    def _read_timer_fired(self) -> None:
        """Expire the wait in progress if its deadline has passed; re-arm for it if not (the timer was armed
        for an earlier wait); nothing when no wait with a deadline is in progress (the next one arms)."""
        self._read_timer = None
        waiter = self._read_waiter
        deadline = self._read_deadline
        if waiter is None or waiter.done() or not deadline:
            return
        if self.loop.time() >= deadline:
            self._read_waiter = None
            waiter.set_exception(ChannelTimeout("read timed out"))
        else:
            self._arm_read_timer(deadline)

    # Writing -------------------------------------------------------------------------------------------

    def queue(self, data: bytes) -> None:
        """Bytes that go out at the next flush (drain, read wait, close, or a direct write)."""
        self._out.append(data)

    @property
    def has_queued(self) -> bool:
        return bool(self._out)

    def flush(self) -> None:
        out = self._out
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            if self.transport is not None and self.link is not Link.CLOSED:
                self.transport.write(data)

    def write(self, data: bytes) -> None:
        """Write now, after anything queued."""
        if self._out:
            self._out.append(data)
            self.flush()
        elif self.transport is not None and self.link is not Link.CLOSED:
            self.transport.write(data)

    async def drain(self) -> None:
        if self._out:
            self.flush()
        if self.link is Link.CLOSED:
            raise ChannelClosed("connection closed")
        if not self._write_paused:
            return
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._drain_waiter = waiter
        await waiter

    # Tunnel and lifecycle ------------------------------------------------------------------------------

    def start_tunnel(self, peer: Stream) -> None:
        """Relay raw bytes to `peer` from now on (after a 101 Switching Protocols). An EOF that arrived
        while this side was still speaking HTTP is passed on now."""
        self.tunnel_peer = peer
        if self.link is Link.HALF_CLOSED:
            self._end_tunnel_direction()
        self.resume_reading()

    def _end_tunnel_direction(self) -> bool:
        """This side sent EOF: half-close the peer's side, or close both once the other direction has ended
        too (or the peer cannot be half-closed). Returns whether this transport stays open."""
        peer = self.tunnel_peer
        assert peer is not None
        transport = peer.transport
        if peer.link is not Link.OPEN or transport is None or not transport.can_write_eof():
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
        self.link = Link.CLOSED
        if self.transport is not None:
            self.transport.abort()
