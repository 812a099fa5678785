"""One client connection: the IO shell that reads requests and carries out what protocol.dispatch decides.

Per connection there is one task (`_serve`) that runs the keep-alive loop: read a head (strictly checked by
protocol.request_head, then parsed by h11), normalise its target, ask `dispatch.decide` what answers it, and
do that: an answer of ours (protocol.answers), an ACME challenge from Redis, the auth gate's body checks
(io.protected_exchange) and the relay (io.http_relay, or io.websocket_relay for upgrades), which see this
connection only through io.client_side.ClientSide. Responses are written by us, never by h11, so each new
request gets a fresh h11 parser holding what was already received (a pipelined request, an EOF).

The connection's phase is explicit (`Phase`): AWAITING a request, HANDLING one (nothing sent yet: an answer
of ours is still possible), RESPONDING (a head went out), or a TUNNEL after a 101. Whether the client is still
there is the link's state (io.stream.Link).

When the listener speaks PROXY protocol, the header is parsed first (only from trusted peers); the address it
carries becomes the client address for X-Forwarded-For and the request log. A PROXY header in front of TLS is
read by io.tls_listener before the handshake and arrives here as `client_address`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time

import h11

from data_plane.acme_challenge import answer_challenge
from data_plane.io.exchange import ClientAborted, ClientBadBody, ExchangeRecord
from data_plane.io.h11_compat import (
    awaiting_protocol_switch,
    end_request_without_body,
    header_pairs,
    trust_checked_head,
)
from data_plane.io.http_relay import relay_http
from data_plane.io.protected_exchange import answer_gate, checked_body
from data_plane.io.stream import ChannelClosed, ChannelTimeout, Link, Stream
from data_plane.io.upstream_connection import UpstreamConnection
from data_plane.io.websocket_relay import relay_websocket
from data_plane.protocol import answers
from data_plane.protocol.dispatch import (
    AcmeLookup,
    GateReply,
    Listener,
    Relay,
    Reply,
    RequestHead,
    decide,
    request_head,
)
from data_plane.protocol.proxy_protocol import (
    MAX_PROXY_HEADER_BYTES,
    ProxyProtocolError,
    parse_proxy_header,
)
from data_plane.protocol.request_head import check_head, find_head_end
from data_plane.protocol.request_target import TargetRejected, parse_request_target
from data_plane.routing.route_table import normalise_host
from data_plane.runtime import Runtime

log = logging.getLogger(__name__)


class Phase(enum.Enum):
    AWAITING = "awaiting a request"  # idle keep-alive, or a head on its way
    HANDLING = "handling"  # a request is being answered; no response byte queued yet
    RESPONDING = "responding"  # a response head has been queued
    TUNNEL = "tunnel"  # after a 101: raw bytes both ways


class ClientConnection(Stream):
    __slots__ = (
        "_closed_waiter",
        "_continue_sent",
        "_keep_alive",
        "_parser",
        "_proxy_buffer",
        "_task",
        "_upstream",
        "client_ip",
        "listener",
        "phase",
        "runtime",
        "scheme",
        "trusted_peer",
    )

    def __init__(
        self,
        runtime: Runtime,
        *,
        expect_proxy_header: bool = False,
        scheme: bytes = b"http",
        client_address: str | None = None,
    ) -> None:
        super().__init__(runtime.loop)
        self.runtime = runtime
        self.scheme = scheme
        self._parser = h11.Connection(h11.SERVER, max_incomplete_event_size=runtime.limits.max_header_bytes)
        self.phase = Phase.AWAITING
        # Set when a PROXY header was read before TLS (tls_listener): the client the load balancer names.
        self.client_ip = client_address or ""
        self.trusted_peer = False
        self.listener = Listener(scheme, False, 0)
        self._task: asyncio.Task[None] | None = None
        self._proxy_buffer: bytearray | None = bytearray() if expect_proxy_header else None
        self._closed_waiter: asyncio.Future[None] | None = None
        # The upstream connection serving the current request, so a vanished client releases it at once
        # (an SSE stream or long poll may not send the next byte for minutes).
        self._upstream: UpstreamConnection | None = None
        self._continue_sent = False
        self._keep_alive = True  # the current request's own wish (h11's rule: HTTP/1.1, no close)

    # Lifecycle -----------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        runtime = self.runtime
        runtime.connections.add(self)
        runtime.metrics.open_connections.inc()
        if not self.client_ip:
            self.client_ip = self.peer_address[0]
        self._trust(self.client_ip)
        if len(runtime.connections) > runtime.limits.max_connections or runtime.draining:
            self._refuse(503, "too many connections" if not runtime.draining else "shutting down")
            return
        if self._proxy_buffer is not None and not self.trusted_peer:
            log.warning("PROXY protocol connection from untrusted %s refused", self.client_ip)
            self.abort()
            return
        self._task = self.loop.create_task(self._serve())

    def _trust(self, client_ip: str) -> None:
        runtime = self.runtime
        self.trusted_peer = runtime.trusted_peers(client_ip)
        settings = runtime.settings
        port = settings.HTTPS_REDIRECT_PORT or settings.HTTPS_PORT
        self.listener = Listener(self.scheme, self.trusted_peer, port)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        upstream = self._upstream
        if upstream is not None and self.phase is not Phase.TUNNEL:
            upstream.abort()
        runtime = self.runtime
        if self in runtime.connections:
            runtime.connections.discard(self)
            runtime.metrics.open_connections.dec()
        waiter = self._closed_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _receive(self, data: bytes) -> None:
        buffer = self._proxy_buffer
        if buffer is not None:
            data = self._proxy_header(buffer, data)
            if not data:
                return
        self._parser.receive_data(data)
        if self.awaiting_data:
            self._wake_reader()
        else:
            self.pause_reading()

    def _proxy_header(self, buffer: bytearray, data: bytes) -> bytes:
        """Bytes after a complete PROXY header (b"" while it is incomplete or was refused)."""
        buffer += data
        try:
            parsed = parse_proxy_header(buffer)
        except ProxyProtocolError as exc:
            log.warning("malformed PROXY header from %s: %s", self.client_ip, exc)
            self.abort()
            return b""
        if parsed is None:
            if len(buffer) > MAX_PROXY_HEADER_BYTES:
                log.warning("oversized PROXY header from %s", self.client_ip)
                self.abort()
            return b""
        header, consumed = parsed
        self._proxy_buffer = None
        if header.source is not None:
            self.client_ip = header.source[0]
            # The load balancer is trusted; the client it speaks for is judged on its own address.
            self._trust(self.client_ip)
        return bytes(buffer[consumed:])

    def _receive_eof(self) -> bool:
        if self._proxy_buffer is not None:
            log.warning("truncated PROXY header from %s", self.client_ip)
            self.abort()
            return False
        upstream = self._upstream
        if upstream is not None and self.phase is not Phase.TUNNEL:
            # As nginx does: a client that closes while its response is pending has abandoned the request,
            # and a quiet upstream (SSE, long poll) must not be held until it next speaks.
            upstream.abort()
        self._parser.receive_data(b"")
        self._wake_reader()
        # Keep the transport open: a client may half-close after its request and still read the response.
        return True

    def close_if_idle(self) -> None:
        """Shutdown: close a connection that is between requests; busy ones close after their response."""
        if self.phase is Phase.AWAITING:
            self.close()

    async def wait_closed(self) -> None:
        if self.closed:
            return
        if self._closed_waiter is None:
            self._closed_waiter = self.loop.create_future()
        await self._closed_waiter

    # The keep-alive loop -------------------------------------------------------------------------------

    async def _serve(self) -> None:
        try:
            first = True
            while True:
                request = await self._read_head(first)
                if request is None:
                    return
                first = False
                self.phase = Phase.HANDLING
                try:
                    keep_alive = await self._exchange(request)
                finally:
                    if self.phase is not Phase.TUNNEL:
                        self.phase = Phase.AWAITING
                self.flush()
                if not keep_alive or self.runtime.draining or self.closed or not self._next_cycle():
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("connection handler failed for %s", self.client_ip)
        finally:
            if self.tunnel_peer is None:
                self.close()

    def _next_cycle(self) -> bool:
        """A fresh h11 parser for the next request (ours wrote the response, so h11's cycle never ended),
        holding what was already received; False when the last request was not read to its end."""
        parser = self._parser
        if parser.their_state is not h11.DONE:
            return False
        pending, closed = parser.trailing_data
        fresh = h11.Connection(h11.SERVER, max_incomplete_event_size=self.runtime.limits.max_header_bytes)
        if pending:
            fresh.receive_data(bytes(pending))
        if closed:
            fresh.receive_data(b"")
        self._parser = fresh
        self._continue_sent = False
        return True

    async def _read_head(self, first: bool) -> h11.Request | None:
        limits = self.runtime.limits
        loop = self.loop
        deadline = loop.time() + limits.header_read_timeout_seconds if first else 0.0
        while True:
            parser = self._parser
            pending, eof = parser.trailing_data
            if pending:
                end = find_head_end(pending)
                if end == -2:
                    self._refuse(400, "malformed request head (bare LF)")
                    return None
                if end == -1 or end > limits.max_header_bytes:
                    if len(pending) > limits.max_header_bytes:
                        self._refuse(431, "request header fields too large")
                        return None
                else:
                    rejected = check_head(pending[:end])
                    if rejected is not None:
                        self._refuse(rejected.status, rejected.reason)
                        return None
                    trust_checked_head(parser, end)
                    try:
                        event = parser.next_event()
                    except h11.RemoteProtocolError as exc:
                        self._refuse(431 if exc.error_status_hint == 431 else 400, f"bad request: {exc}")
                        return None
                    if type(event) is h11.Request:
                        return event
                    self._refuse(400, "bad request")
                    return None
                if not deadline:
                    deadline = loop.time() + limits.header_read_timeout_seconds
            if eof or self.closed:
                return None
            if pending or first:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    self._refuse(408, "request head not received in time")
                    return None
            else:
                if self.runtime.draining:
                    return None
                timeout = limits.keepalive_idle_timeout_seconds
            try:
                await self.wait_for_data(timeout)
            except ChannelTimeout:
                if self._proxy_buffer is not None:
                    log.warning("PROXY header from %s not received in time", self.client_ip)
                    self.abort()
                    return None
                if pending or first:
                    self._refuse(408, "request head not received in time")
                return None
            except ChannelClosed:
                return None

    # One request ---------------------------------------------------------------------------------------

    async def _exchange(self, event: h11.Request) -> bool:
        """Decide and carry out one request; returns whether the connection may serve another."""
        runtime = self.runtime
        started = time.monotonic()
        request_id = runtime.request_ids.next()
        request = request_head(event.method, event.target, event.http_version, header_pairs(event.headers))
        self._keep_alive = request.keep_alive
        if not request.has_body:
            # A bodiless request has ended with its head (h11's state machine is told so directly).
            end_request_without_body(self._parser)
        method = request.method.decode("ascii")
        parsed = parse_request_target(request.method, request.target, request.host)
        if isinstance(parsed, TargetRejected):
            record = ExchangeRecord(
                started, normalise_host(request.host), method, request.target.decode("latin-1"), request_id
            )
            reply = Reply(400, f"bad request target: {parsed.reason}", True)
            keep_alive = self._answer(record, reply, head_only=request.method == b"HEAD")
            self.finish_record(record)
            return keep_alive
        # From here on only the normalised target exists: ACME, routing, auth and the upstream all see it.
        host = normalise_host(parsed.host)
        record = ExchangeRecord(started, host, method, parsed.target.decode("latin-1"), request_id)
        certificates = runtime.certificates
        decision = decide(
            request,
            parsed,
            host,
            table=runtime.table,
            listener=self.listener,
            https_live=(
                lambda name: certificates is not None and certificates.current.has_certificate_for(name)
            ),
            policies=runtime.auth_policies,
            auth_context=runtime.auth_context,
            auth_host=runtime.auth_host,
            now=time.time(),
        )
        try:
            return await self._carry_out(decision, request, record)
        except ClientAborted:
            record.status = record.status or 499
            return False
        finally:
            self._upstream = None
            self.finish_record(record)

    async def _carry_out(
        self, decision: Reply | GateReply | AcmeLookup | Relay, request: RequestHead, record: ExchangeRecord
    ) -> bool:
        if isinstance(decision, Relay):
            record.route_id = decision.route_id
            record.upstream = decision.upstream.url
            record.user = decision.login
            record.client_id = decision.client_id
            body: bytes | None = None
            if decision.mcp_check is not None:
                record.mcp_method = decision.mcp_check.mcp_method or ""
                record.mcp_tool = decision.mcp_check.mcp_name or ""
                checked = await checked_body(self, request, decision, record)
                if isinstance(checked, bool):
                    return checked
                body = checked
            elif decision.mcp_logged is not None:
                record.mcp_method, record.mcp_tool = decision.mcp_logged
            if decision.websocket:
                return await relay_websocket(self, request, decision, record)
            return await relay_http(self, request, decision, record, body)
        if isinstance(decision, Reply):
            return self.answer(record, decision)
        if isinstance(decision, GateReply):
            return await answer_gate(self, record, decision)
        return await self._answer_acme(record, decision)

    # The ClientSide interface (io.client_side) -------------------------------------------------------

    @property
    def gone(self) -> bool:
        return self.link is not Link.OPEN

    @property
    def request_complete(self) -> bool:
        return self._parser.their_state is h11.DONE

    @property
    def stream(self) -> Stream:
        return self

    @property
    def awaiting_protocol_switch(self) -> bool:
        return awaiting_protocol_switch(self._parser)

    def answer(self, record: ExchangeRecord, reply: Reply) -> bool:
        return self._answer(record, reply, head_only=record.method == "HEAD")

    def begin_response(self, head: bytes) -> None:
        self.phase = Phase.RESPONDING
        self.queue(head)

    def watch_upstream(self, upstream: UpstreamConnection | None) -> None:
        self._upstream = upstream

    def continue_if_expected(self) -> None:
        if not self._continue_sent and self._parser.they_are_waiting_for_100_continue:
            self._continue_sent = True
            self.write(answers.CONTINUE)

    @property
    def waiting_for_continue(self) -> bool:
        return not self._continue_sent and self._parser.they_are_waiting_for_100_continue

    async def body_chunk(self) -> bytes | None:
        """The next piece of the request body, or None at its end. Bad framing raises ClientBadBody; a
        client that leaves or stays silent past the keep-alive idle timeout raises ClientAborted."""
        parser = self._parser
        timeout = self.runtime.limits.keepalive_idle_timeout_seconds
        try:
            while True:
                event = parser.next_event()
                if event is not h11.NEED_DATA:
                    break
                if parser.their_state is h11.ERROR:
                    raise ClientAborted
                await self.wait_for_data(timeout)
        except h11.RemoteProtocolError as exc:
            raise ClientBadBody(str(exc)) from exc
        except (ChannelClosed, ChannelTimeout) as exc:
            raise ClientAborted from exc
        kind = type(event)
        if kind is h11.Data:
            data: bytes = event.data  # type: ignore[union-attr]
            return data
        if kind is h11.EndOfMessage:
            return None
        raise ClientAborted

    def switch_protocols(self, head: bytes, upstream: UpstreamConnection) -> None:
        self.phase = Phase.TUNNEL
        self.write(head)
        # Bytes that arrived right behind either head belong to the WebSocket stream.
        client_rest = self._parser.trailing_data[0]
        upstream_rest = upstream.switched_rest
        if upstream_rest:
            self.write(upstream_rest)
        if client_rest:
            upstream.write(bytes(client_rest))
        self.start_tunnel(upstream)
        upstream.start_tunnel(self)
        if upstream.closed:
            self.close()

    # Answers of our own --------------------------------------------------------------------------------

    def _answer(self, record: ExchangeRecord, reply: Reply, *, head_only: bool) -> bool:
        close = self._answer_closes(record, reply.status, reply.close)
        if close is None:
            return False
        request_id = record.request_id.encode()
        self.queue(
            answers.text_answer(
                reply.status, reply.message, request_id, close=close, head_only=head_only, extra=reply.headers
            )
        )
        return not close

    def send_composed(
        self,
        record: ExchangeRecord,
        status: int,
        headers: tuple[tuple[bytes, bytes], ...],
        body: bytes,
        *,
        close: bool,
    ) -> bool:
        """An answer whose content the auth gate composed (io.protected_exchange)."""
        closes = self._answer_closes(record, status, close)
        if closes is None:
            return False
        head_only = record.method == "HEAD"
        request_id = record.request_id.encode()
        self.queue(
            answers.composed_answer(status, headers, body, request_id, close=closes, head_only=head_only)
        )
        return not closes

    def _answer_closes(self, record: ExchangeRecord, status: int, close: bool) -> bool | None:
        """Whether an answer of ours closes the connection; None when it cannot be sent at all (a response
        is already under way: the only signal left is the cut)."""
        record.status = status
        if self.phase is not Phase.HANDLING:
            self.abort()
            return None
        self.phase = Phase.RESPONDING
        return close or self.runtime.draining or not self._keep_alive

    async def _answer_acme(self, record: ExchangeRecord, lookup: AcmeLookup) -> bool:
        try:
            answer = await answer_challenge(self.runtime.redis, lookup.path)
        except Exception as exc:  # Redis down: the CA retries; never a traceback per probe
            log.warning("ACME challenge lookup failed: %s", exc)
            return self.answer(record, Reply(503, "ACME challenge store unavailable", lookup.close))
        if answer.status != 200:
            message = answer.body.decode("ascii", "replace").strip()
            return self.answer(record, Reply(answer.status, message, lookup.close))
        self.runtime.metrics.acme_challenges_answered_total.inc()
        content_type = ((b"content-type", answer.content_type.encode()),)
        return self.send_composed(record, 200, content_type, answer.body, close=lookup.close)

    def _refuse(self, status: int, message: str) -> None:
        """Answer input that never became a request (its parser may be in ERROR) and close."""
        self.runtime.metrics.count_request(status)
        self.write(answers.closing_answer(status, message))
        self.close()

    def finish_record(self, record: ExchangeRecord) -> None:
        if record.finished:
            return
        record.finished = True
        self.runtime.metrics.count_request(record.status)
        self.runtime.request_log.submit(record.log_entry(self.client_ip))
