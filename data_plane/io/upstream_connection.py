"""One connection to an upstream origin: requests written by us, responses parsed by llhttp.

A request's head is serialised by protocol.forwarding from validated headers, its body framed here
(as received: Content-Length, or re-chunked). The response goes through protocol.upstream_response, one
parser per exchange. Its body is streamed to the client from `data_received` itself (`stream_body`): no
coroutine step per chunk, each piece written to the client as it arrives (SSE events are never held), the
client's full write buffer pausing our reading.

The connection's phase is explicit (`Phase`): in an EXCHANGE, idle in the POOL, a TUNNEL after a 101, or
BROKEN (whatever it says next cannot be trusted: a parse error, bytes past the response, a cut body). Only an
exchange that ended cleanly on both sides with keep-alive may go back to the pool (`reusable`).
"""

from __future__ import annotations

import asyncio
import enum

from data_plane.io.stream import ChannelClosed, ChannelTimeout, Link, Stream
from data_plane.protocol.response_framing import LAST_CHUNK, chunk
from data_plane.protocol.upstream_response import (
    BodyData,
    Framing,
    Informational,
    ParseState,
    ResponseEnd,
    ResponseEvent,
    ResponseHead,
    ResponseParser,
    UpstreamProtocolError,
)


class Phase(enum.Enum):
    EXCHANGE = "exchange"
    POOL = "pool"
    TUNNEL = "tunnel"
    BROKEN = "broken"


class UpstreamConnection(Stream):
    __slots__ = (
        "_body_bytes",
        "_chunked_out",
        "_error",
        "_events",
        "_parser",
        "_sink",
        "_sink_framing",
        "idle_since",
        "max_head_bytes",
        "phase",
        "request_sent",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, *, max_head_bytes: int = 65536) -> None:
        super().__init__(loop)
        self.max_head_bytes = max_head_bytes
        self.phase = Phase.EXCHANGE
        self.idle_since = 0.0
        self.request_sent = False
        self._parser: ResponseParser | None = None
        self._events: list[ResponseEvent] = []
        self._error: UpstreamProtocolError | None = None
        self._sink: Stream | None = None
        self._sink_framing = Framing.NONE
        self._body_bytes = 0
        self._chunked_out = False

    # Writing the request -------------------------------------------------------------------------------

    def start_request(self, method: bytes, head: bytes, *, chunked: bool) -> None:
        """Queue a request head (serialised by protocol.forwarding); a fresh parser awaits its response."""
        self.phase = Phase.EXCHANGE
        self.bytes_received = 0
        self.request_sent = False
        self._chunked_out = chunked
        if self._parser is None:
            self._parser = ResponseParser(method, max_head_bytes=self.max_head_bytes)
        else:
            self._parser.next_response(method)
        self._events = []
        self._error = None
        self.queue(head)

    def send_body(self, data: bytes) -> None:
        if data:
            self.queue(chunk(data) if self._chunked_out else data)

    def end_request(self) -> None:
        if self._chunked_out:
            self.queue(LAST_CHUNK)
        self.request_sent = True

    # Reading the response ------------------------------------------------------------------------------

    def _receive(self, data: bytes) -> None:
        parser = self._parser
        if self.phase is not Phase.EXCHANGE or parser is None:
            # An idle pooled connection must stay silent; anything it sends makes it unusable.
            self.phase = Phase.BROKEN
            self.abort()
            return
        try:
            events = parser.receive_data(data)
        except UpstreamProtocolError as exc:
            self._fail(exc)
            return
        if parser.trailing:
            self.phase = Phase.BROKEN
        if self._sink is not None:
            self._to_sink(events)
            return
        if events:
            self._events += events
        if self.awaiting_data:
            self._wake_reader()
        elif parser.state is not ParseState.DONE:
            self.pause_reading()

    def _receive_eof(self) -> bool:
        parser = self._parser
        if self.phase is not Phase.EXCHANGE or parser is None:
            self.phase = Phase.BROKEN
            return False
        if self.bytes_received == 0:
            # Closed without a byte of answer: a lost connection (ChannelClosed from next_events), not an
            # invalid response. On a pooled connection that is the keep-alive race (the upstream closed it
            # as our request went out), which http_relay may retry on a new connection.
            self.phase = Phase.BROKEN
            self._wake_reader()
            return False
        try:
            events = parser.receive_eof()
        except UpstreamProtocolError as exc:
            self._fail(exc)
            return False
        if self._sink is not None:
            self._to_sink(events)
        else:
            self._events += events
            self._wake_reader()
        return False

    def _fail(self, error: UpstreamProtocolError) -> None:
        self._error = error
        self.phase = Phase.BROKEN
        self._wake_reader(error)

    def take_events(self) -> list[ResponseEvent]:
        events = self._events
        self._events = []
        return events

    async def next_events(self, timeout_seconds: float | None) -> list[ResponseEvent]:
        """Events parsed so far, waiting for some if there are none. Raises UpstreamProtocolError,
        ChannelClosed (closed before a complete response), ChannelTimeout."""
        while not self._events:
            if self._error is not None:
                raise self._error
            if self.link is not Link.OPEN:
                raise ChannelClosed("upstream closed the connection")
            await self.wait_for_data(timeout_seconds)
        return self.take_events()

    async def response_head(self, timeout_seconds: float) -> ResponseHead | Informational:
        """The final response head, or a 101 (then `switched_rest` holds what followed it); other 1xx
        are dropped. Body events that arrived with the head stay queued for `stream_body`."""
        while True:
            events = await self.next_events(timeout_seconds)
            for index, event in enumerate(events):
                kind = type(event)
                if kind is ResponseHead or (kind is Informational and event.status == 101):  # type: ignore[union-attr]
                    self._events = events[index + 1 :] + self._events
                    return event  # type: ignore[return-value]
                if kind is not Informational:
                    raise UpstreamProtocolError(f"unexpected {kind.__name__} before the response head")

    def buffered_head(self) -> ResponseHead | None:
        """A final response head already received (the upstream answered before the request was sent)."""
        for index, event in enumerate(self._events):
            if type(event) is ResponseHead:
                self._events = self._events[index + 1 :]
                return event
        return None

    @property
    def switched_rest(self) -> bytes:
        return self._parser.switched_rest if self._parser is not None else b""

    # Streaming the body ---------------------------------------------------------------------------------

    async def stream_body(self, sink: Stream, framing: Framing, timeout_seconds: float | None) -> int:
        """Write the response body to `sink`, framed for it (`framing`), as it arrives; returns the body
        bytes relayed. `timeout_seconds` bounds the upstream's silence, not time spent waiting for a slow
        sink. Raises UpstreamProtocolError, ChannelClosed (closed mid-body, or the sink is gone),
        ChannelTimeout; a body cut by any of these leaves the connection BROKEN."""
        self._body_bytes = 0
        self._sink = sink
        self._sink_framing = framing
        sink.feed_from(self)
        try:
            self._to_sink(self.take_events())
            while self._parser is not None and self._parser.state is not ParseState.DONE:
                if self._error is not None:
                    raise self._error
                if self.link is Link.CLOSED:
                    raise ChannelClosed("upstream connection lost mid-body")
                before = self.bytes_received
                try:
                    await self._wait_streaming(timeout_seconds)
                except ChannelTimeout:
                    if self.bytes_received == before and not sink.write_paused:
                        raise
            if self._error is not None:
                raise self._error
            if sink.closed:
                raise ChannelClosed("client connection lost")
            return self._body_bytes
        except BaseException:
            self.phase = Phase.BROKEN
            raise
        finally:
            self._sink = None
            sink.feed_from(None)

    def _wait_streaming(self, timeout_seconds: float | None) -> asyncio.Future[None]:
        # Reading stays paused while the client's buffer is full (its drain resumes it).
        return self._reader_waiter(timeout_seconds, resume=not self._sink_paused())

    def _sink_paused(self) -> bool:
        sink = self._sink
        return sink is not None and sink.write_paused

    def _to_sink(self, events: list[ResponseEvent]) -> None:
        sink = self._sink
        assert sink is not None
        chunked = self._sink_framing is Framing.CHUNKED
        for event in events:
            kind = type(event)
            if kind is BodyData:
                data = event.data  # type: ignore[union-attr]
                self._body_bytes += len(data)
                if self._sink_framing is not Framing.NONE:
                    sink.write(chunk(data) if chunked else data)
            elif kind is ResponseEnd:
                if chunked:
                    sink.write(LAST_CHUNK)
                elif sink.has_queued:
                    sink.flush()
                self._wake_reader()
                return
        if sink.has_queued:
            sink.flush()  # the head, when the first body bytes are still on their way
        if sink.write_paused:
            self.pause_reading()

    # Reuse ---------------------------------------------------------------------------------------------

    def reusable(self, head: ResponseHead) -> bool:
        """The exchange ended cleanly (whole request sent, whole response read, nothing after it) and both
        sides keep the connection alive."""
        parser = self._parser
        return (
            self.phase is Phase.EXCHANGE
            and self.link is Link.OPEN
            and self.request_sent
            and head.keep_alive
            and parser is not None
            and parser.reusable
        )

    def park(self, now: float) -> None:
        """Into the pool: reading stays on, so a close or a stray byte is noticed at once."""
        self.phase = Phase.POOL
        self.idle_since = now
        self.resume_reading()

    def start_tunnel(self, peer: Stream) -> None:
        self.phase = Phase.TUNNEL
        super().start_tunnel(peer)
