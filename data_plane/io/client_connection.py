"""One client connection: the IO shell that reads requests, routes them and relays them to an upstream.

Per connection there is one task (`_serve`) that runs the keep-alive loop: read a head (strictly checked by
protocol.request_head before h11 parses it), look the host up in the current route table, then stream the
request body up and the response body down with paired back-pressure (see io.channel). Errors are mapped to
HTTP status at one place (`_exchange`): 400/431 malformed head, 404 unknown host, 503 disabled proxy, 413 body
too large, 502 refused/reset upstream, 504 upstream timeout. A WebSocket upgrade is validated, forwarded, and
after the upstream's 101 both sides become a raw byte tunnel, so extensions such as permessage-deflate are
negotiated end to end between client and backend.

A request to a protected proxy (one with an entry in runtime.auth_policies) first passes the sans-IO gate
(data_plane.auth.gate) in `_guard`: answered here (PRM, 401/403, Mcp-* mismatch), forwarded to the AUTH_HOST
proxy (authorization-server paths), or relayed with rewritten headers (no Authorization, no client-sent
identity, ours added). Unprotected proxies pay one truthiness check.

When the listener speaks PROXY protocol, the header is parsed first (only from trusted peers); the address it
carries becomes the client address for X-Forwarded-For and the request log.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import time
from http import HTTPStatus
from typing import Any, cast

import h11

from data_plane.acme_challenge import CHALLENGE_PATH_PREFIX, answer_challenge
from data_plane.auth.gate import (
    MAX_CHECKED_BODY_BYTES,
    MAX_DISCARDED_BODY_BYTES,
    Answer,
    Forward,
    ToAuthorizationServer,
    check_body,
    decide,
    effective_scheme,
)
from data_plane.io.channel import ChannelClosed, ChannelTimeout, HttpChannel
from data_plane.io.upstream_pool import (
    OriginKey,
    UpstreamBroken,
    UpstreamConnectError,
    UpstreamConnectTimeout,
    UpstreamPool,
    read_response_head,
)
from data_plane.io.websocket_relay import relay_websocket
from data_plane.protocol.forwarding import (
    MCP_EXPOSED_HEADERS,
    client_response_headers,
    header_pairs,
    serialise_head,
    upstream_request_headers,
)
from data_plane.protocol.https_redirect import https_location
from data_plane.protocol.proxy_protocol import ProxyProtocolError, parse_proxy_header
from data_plane.protocol.request_head import check_head, find_head_end
from data_plane.protocol.websocket_handshake import is_websocket_upgrade
from data_plane.request_log import RequestLogEntry
from data_plane.routing.route_table import ProxyEntry, Upstream, lookup_proxy, normalise_host, select_upstream
from data_plane.runtime import Runtime

log = logging.getLogger(__name__)

IDEMPOTENT_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
_FRAMING_HEADERS = frozenset({b"content-length", b"transfer-encoding"})
MAX_PROXY_HEADER_BYTES = 16 + 65535
_REQUEST_ID_PREFIX = os.urandom(6).hex()
_ACME_PREFIX = CHALLENGE_PATH_PREFIX.encode()
_REASONS = {
    308: "Permanent Redirect",
    400: "Bad Request",
    404: "Not Found",
    408: "Request Timeout",
    413: "Content Too Large",
    421: "Misdirected Request",
    426: "Upgrade Required",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class _ClientAborted(Exception):
    """The client went away or broke protocol mid-request; nothing more can be sent to it."""


class _BodyTooLarge(Exception):
    pass


class _UpstreamAnswered(Exception):
    """The upstream sent its response before the request body was fully sent (an early 413, a redirect)."""

    def __init__(self, response: Any) -> None:
        super().__init__("upstream answered early")
        self.response = response


class _ClientBadBody(Exception):
    """The request body's framing is invalid (e.g. a bad chunk size): 400, then close."""


# What the gate lets through: the proxy entry to use, the rewritten client headers, the body if it was read.
_Guarded = tuple[ProxyEntry, list[tuple[bytes, bytes]], bytes | None]


def is_trusted(ip: str, networks: tuple[Any, ...]) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


class ClientConnection(HttpChannel):
    __slots__ = (
        "_closed_waiter",
        "_proxy_buffer",
        "_request_counter",
        "_task",
        "active_upstream",
        "busy",
        "client_gone",
        "client_ip",
        "response_untracked",
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
        super().__init__(runtime.loop, h11.SERVER, max_head_bytes=runtime.limits.max_header_bytes)
        self.runtime = runtime
        self.scheme = scheme
        # Set when a PROXY header was read before TLS (tls_listener): the client the load balancer names.
        self.client_ip = client_address or ""
        self.trusted_peer = False
        self.busy = False
        self._task: asyncio.Task[None] | None = None
        self._proxy_buffer: bytearray | None = bytearray() if expect_proxy_header else None
        self._closed_waiter: asyncio.Future[None] | None = None
        self._request_counter = 0
        # The upstream connection serving the current request, so a vanished client releases it at once
        # (an SSE stream or long poll may not send the next byte for minutes).
        self.active_upstream: HttpChannel | None = None
        self.client_gone = False
        # The current response was written without h11 (see _relay): h11 is not asked to end the cycle.
        self.response_untracked = False

    # Lifecycle -----------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        runtime = self.runtime
        runtime.connections.add(self)
        runtime.metrics.open_connections.inc()
        if not self.client_ip:
            self.client_ip = self.peer_address[0]
        self.trusted_peer = is_trusted(self.client_ip, runtime.settings.trusted_proxy_networks)
        if len(runtime.connections) > runtime.limits.max_connections or runtime.draining:
            self._write_error_and_close(
                503, "too many connections" if not runtime.draining else "shutting down"
            )
            return
        if self._proxy_buffer is not None and not self.trusted_peer:
            log.warning("PROXY protocol connection from untrusted %s refused", self.client_ip)
            self.abort()
            return
        self._task = self.loop.create_task(self._serve())

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.client_gone = True
        upstream = self.active_upstream
        if upstream is not None and not upstream.in_pool:
            upstream.abort()
        runtime = self.runtime
        if self in runtime.connections:
            runtime.connections.discard(self)
            runtime.metrics.open_connections.dec()
        waiter = self._closed_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        buffer = self._proxy_buffer
        if buffer is None:
            super().data_received(data)
            return
        buffer += data
        try:
            parsed = parse_proxy_header(buffer)
        except ProxyProtocolError as exc:
            log.warning("malformed PROXY header from %s: %s", self.client_ip, exc)
            self.abort()
            return
        if parsed is None:
            if len(buffer) > MAX_PROXY_HEADER_BYTES:
                log.warning("oversized PROXY header from %s", self.client_ip)
                self.abort()
            return
        header, consumed = parsed
        self._proxy_buffer = None
        if header.source is not None:
            self.client_ip = header.source[0]
            # The load balancer is trusted; the client it speaks for is judged on its own address.
            self.trusted_peer = is_trusted(self.client_ip, self.runtime.settings.trusted_proxy_networks)
        rest = bytes(buffer[consumed:])
        if rest:
            super().data_received(rest)

    def eof_received(self) -> bool:
        if self._proxy_buffer is not None:
            log.warning("truncated PROXY header from %s", self.client_ip)
            self.abort()
            return False
        self.client_gone = True
        upstream = self.active_upstream
        if upstream is not None and not upstream.in_pool and self.tunnel_peer is None:
            # As nginx does: a client that closes while its response is pending has abandoned the request,
            # and a quiet upstream (SSE, long poll) must not be held until it next speaks.
            upstream.abort()
        return super().eof_received()

    def close_if_idle(self) -> None:
        """Shutdown: close a connection that is between requests; busy ones close after their response."""
        if not self.busy:
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
                self.busy = True
                try:
                    keep_alive = await self._exchange(request)
                finally:
                    self.busy = False
                self.flush()
                if not keep_alive or self.runtime.draining or self.closed:
                    return
                if not self._next_cycle():
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("connection handler failed for %s", self.client_ip)
        finally:
            if self.tunnel_peer is None:
                self.close()

    def _next_cycle(self) -> bool:
        """Make the connection ready for the next request; False when it cannot take one."""
        conn = self.conn
        if conn.their_state is not h11.DONE:
            return False
        if not self.response_untracked:
            if conn.our_state is not h11.DONE:
                return False
            conn.start_next_cycle()
            return True
        # h11 never saw the response we wrote, so it cannot start a cycle; a new parser takes over the
        # bytes already received (a pipelined request) and EOF, exactly as start_next_cycle would keep them.
        self.response_untracked = False
        pending, closed = conn.trailing_data
        fresh = h11.Connection(h11.SERVER, max_incomplete_event_size=self.runtime.limits.max_header_bytes)
        if pending:
            fresh.receive_data(pending)
        if closed:
            fresh.receive_data(b"")
        self.conn = fresh
        return True

    async def _read_head(self, first: bool) -> h11.Request | None:
        conn = self.conn
        limits = self.runtime.limits
        loop = self.loop
        deadline = loop.time() + limits.header_read_timeout_seconds if first else 0.0
        while True:
            pending, eof = conn.trailing_data
            if pending:
                end = find_head_end(pending)
                if end == -2:
                    self._write_error_and_close(400, "malformed request head (bare LF)")
                    return None
                if end == -1 or end > limits.max_header_bytes:
                    if len(pending) > limits.max_header_bytes:
                        self._write_error_and_close(431, "request header fields too large")
                        return None
                else:
                    rejected = check_head(pending[:end])
                    if rejected is not None:
                        self._write_error_and_close(rejected.status, rejected.reason)
                        return None
                    try:
                        event = conn.next_event()
                    except h11.RemoteProtocolError as exc:
                        status = 431 if exc.error_status_hint == 431 else 400
                        self._write_error_and_close(status, f"bad request: {exc}")
                        return None
                    if type(event) is h11.Request:
                        return event
                    self._write_error_and_close(400, "bad request")
                    return None
                if not deadline:
                    deadline = loop.time() + limits.header_read_timeout_seconds
            if eof or self.closed:
                return None
            if pending or first:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    self._write_error_and_close(408, "request head not received in time")
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
                    self._write_error_and_close(408, "request head not received in time")
                return None
            except ChannelClosed:
                return None

    # One request ---------------------------------------------------------------------------------------

    async def _exchange(self, request: h11.Request) -> bool:
        """Route and relay one request; returns whether the connection may serve another."""
        runtime = self.runtime
        started = time.monotonic()
        self._request_counter += 1
        request_id = f"{_REQUEST_ID_PREFIX}{id(self) & 0xFFFFFF:06x}{self._request_counter:x}".encode()
        host_raw = b""
        content_length = -1
        chunked = False
        upgrade = False
        has_origin = False
        request_headers = header_pairs(request.headers)
        for name, value in request_headers:
            if name == b"host":
                host_raw = value
            elif name == b"content-length":
                content_length = int(value)
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"upgrade":
                upgrade = True
            elif name == b"origin":
                has_origin = True
        if content_length <= 0 and not chunked:
            # A bodiless request has ended with its head: tell h11's state machine directly (what its
            # zero-length reader would yield from next_event, minus the reader) so the cycle can end.
            self.body_received()
        host = normalise_host(host_raw)
        target = request.target
        query_at = target.find(b"?")
        path = (target if query_at < 0 else target[:query_at]).decode("latin-1")
        method = request.method
        record = ExchangeRecord(
            started, host, method.decode("ascii"), target.decode("latin-1"), request_id.decode()
        )

        try:
            if target.startswith(_ACME_PREFIX):
                # ACME HTTP-01 answers come from Redis before routing and auth, on any Host (issue 4).
                return await self._answer_acme(record, target, close=chunked or content_length > 0)
            if not target.startswith(b"/"):
                if target == b"*" and method == b"OPTIONS":
                    pass
                else:
                    return self.answer_error(record, 400, "only origin-form request targets are supported")
            entry = lookup_proxy(runtime.table, host)
            if entry is None:
                return self.answer_error(
                    record, 404, f"unknown host: {host}", close=chunked or content_length > 0
                )
            if not entry.enabled:
                return self.answer_error(
                    record, 503, f"proxy {entry.hostname} is disabled", close=chunked or content_length > 0
                )
            if self.scheme == b"http":
                if entry.redirect_http and entry.enable_https and self._https_live(host):
                    return self._redirect_to_https(record, host, target, close=chunked or content_length > 0)
                if not entry.enable_http:
                    return self.answer_error(
                        record,
                        421,
                        f"proxy {entry.hostname} is served over HTTPS only",
                        close=chunked or content_length > 0,
                    )
            elif not entry.enable_https:
                return self.answer_error(
                    record,
                    421,
                    f"proxy {entry.hostname} is not served over HTTPS",
                    close=chunked or content_length > 0,
                )
            if content_length > entry.max_request_body_bytes:
                return self.answer_error(record, 413, "request body too large", close=True)
            body: bytes | None = None
            cors_expose = b""
            policies = runtime.auth_policies
            if policies and entry.hostname in policies:
                if has_origin:
                    # A browser-based MCP client must be able to read the session and auth headers.
                    cors_expose = MCP_EXPOSED_HEADERS
                # A protected proxy (data_plane.auth.gate); unprotected ones pay only the check above.
                guarded = await self._guard(
                    record, request, request_headers, entry, path, content_length, chunked
                )
                if type(guarded) is bool:
                    return guarded
                entry, request_headers, body = guarded
                if upgrade:
                    request = h11.Request(
                        method=request.method,
                        target=request.target,
                        headers=request_headers,
                        http_version=request.http_version,
                    )
            upstream, route_id = select_upstream(entry, record.method, path)
            record.route_id = route_id
            record.upstream = upstream.url
            if upgrade and is_websocket_upgrade(request.headers):
                return await relay_websocket(self, request, entry, upstream, record)
            return await self._relay(
                request, request_headers, entry, upstream, record, content_length, chunked, body, cors_expose
            )
        except _ClientAborted:
            record.status = record.status or 499
            return False
        finally:
            self.active_upstream = None
            self.finish_record(record)

    async def _relay(
        self,
        request: h11.Request,
        request_headers: list[tuple[bytes, bytes]],
        entry: ProxyEntry,
        upstream: Upstream,
        record: ExchangeRecord,
        content_length: int,
        chunked: bool,
        body: bytes | None = None,
        cors_expose: bytes = b"",
    ) -> bool:
        runtime = self.runtime
        pool = runtime.pool
        headers, _host = upstream_request_headers(
            request_headers,
            entry=entry,
            upstream_host_header=upstream.host_header,
            client_ip=self.client_ip,
            scheme=self.scheme,
            request_id=record.request_id.encode(),
            trusted_peer=self.trusted_peer,
            chunked=chunked,
        )
        target = request.target
        if upstream.base_path:
            target = upstream.base_path.encode() + target
        has_body = chunked or content_length > 0
        request_head = serialise_head(b"%s %s HTTP/1.1" % (request.method, target), headers)
        key = pool.origin_key(upstream, entry.verify_upstream_tls, entry.upstream_ca_bundle_pem)
        retried = False
        while True:
            up = pool.take_idle(key)
            reused = up is not None
            try:
                if up is None:
                    up = await pool.connect(
                        upstream,
                        entry.verify_upstream_tls,
                        entry.upstream_ca_bundle_pem,
                        entry.connect_timeout_seconds,
                    )
                self.active_upstream = up
                sent_at = time.monotonic()
                if request_head is None:
                    up.send(h11.Request(method=request.method, target=target, headers=headers))
                else:
                    up.send_head(_request_state_event(request.method, request_head[1]), request_head[0])
                sent_mark = up.bytes_received
                if has_body:
                    # Read the upstream while uploading, so an early answer is buffered before it hangs up.
                    up._resume_reading()
                    if body is None:
                        record.bytes_in = await self._pump_request_body(up, entry.max_request_body_bytes)
                    else:
                        # Already read whole (the Mcp-* check needed it): send it as the client framed it.
                        if body:
                            up.send(h11.Data(data=body))
                        up.send(h11.EndOfMessage())
                        await up.drain()
                        record.bytes_in = len(body)
                else:
                    # A bodiless request's end writes no bytes: only h11's state needs to know.
                    up.body_sent()
                # The request is fully read: keep reading the client (at most one chunk is buffered) so that
                # its departure is noticed while the upstream is quiet.
                self._resume_reading()
                response = await read_response_head(up, entry.read_timeout_seconds, sent_mark)
                runtime.metrics.upstream_latency_seconds.observe(time.monotonic() - sent_at)
                break
            except UpstreamConnectError as exc:
                log.debug("upstream %s: %s", upstream.url, exc)
                return self.answer_error(record, 502, "upstream refused the connection", close=has_body)
            except UpstreamConnectTimeout:
                return self.answer_error(record, 504, "upstream connect timed out", close=has_body)
            except ChannelTimeout:
                assert up is not None
                up.abort()
                return self.answer_error(record, 504, "upstream did not answer in time", close=True)
            except _UpstreamAnswered as answered:
                assert up is not None
                response = answered.response
                break
            except _BodyTooLarge:
                assert up is not None
                up.abort()
                return self.answer_error(record, 413, "request body too large", close=True)
            except _ClientBadBody as exc:
                assert up is not None
                up.abort()
                return self.answer_error(record, 400, f"malformed request body: {exc}", close=True)
            except _ClientAborted:
                if up is not None:
                    up.abort()
                raise
            except (ChannelClosed, h11.ProtocolError, UpstreamBroken) as exc:
                assert up is not None
                if self.client_gone:
                    up.abort()
                    raise _ClientAborted from exc
                early = _buffered_response(up) if has_body else None
                if early is not None:
                    # The upstream answered (e.g. 413) and stopped reading the body: relay its answer.
                    response = early
                    break
                stale = reused and up.bytes_received == 0
                up.abort()
                if stale and not retried and not has_body and request.method in IDEMPOTENT_METHODS:
                    # A pooled connection the upstream had already closed; one fresh attempt is safe.
                    retried = True
                    continue
                log.debug("upstream %s failed: %r", upstream.url, exc)
                return self.answer_error(record, 502, "upstream closed or reset the connection", close=True)

        close = runtime.draining or self.conn.their_state is not h11.DONE
        response_headers = header_pairs(response.headers)
        out_headers, sse = client_response_headers(
            response_headers,
            entry=entry,
            request_id=record.request_id.encode(),
            close=close,
            hsts=entry.hsts_header if self.scheme == b"https" else b"",
            cors_expose=cors_expose,
        )
        status = response.status_code
        record.status = status
        response_head = None
        conn = self.conn
        # h11 rewrites a response head only to re-frame it (no Content-Length, or an HTTP/1.0 client) or to
        # add Connection: close; when it would not, we serialise it ourselves (see HttpChannel.send_head).
        body_length = -1
        if not close and conn.their_http_version == b"1.1" and conn._cstate.keep_alive:
            framing = [header for header in out_headers if header[0] in _FRAMING_HEADERS]
            if len(framing) == 1 and framing[0][0] == b"content-length":
                response_head = serialise_head(b"HTTP/1.1 %d %s" % (status, response.reason), out_headers)
                body_length = _relayable_body_length(
                    request.method, response.status_code, response_headers, framing[0][1]
                )
        read_timeout = None if sse else entry.read_timeout_seconds
        if response_head is not None and body_length >= 0:
            # Head and body framed by us, byte for byte what h11 would write; h11 on this side only parses
            # requests from here on, and the connection gets a fresh one for the next (_next_cycle).
            self._out.append(response_head[0])
            self.response_untracked = True
            return await self._relay_counted_body(up, pool, key, record, body_length, read_timeout)
        if response_head is None:
            self.send(h11.Response(status_code=status, headers=out_headers, reason=response.reason))
        else:
            wire, state_headers = response_head
            self.send_head(
                h11.Response(status_code=status, headers=state_headers, reason=response.reason, _parsed=True),
                wire,
            )
        try:
            while True:
                try:
                    event = await up.next_event(read_timeout, self)
                except (ChannelTimeout, ChannelClosed, h11.ProtocolError) as exc:
                    # Mid-body there is no status left to send; closing tells the client the body is cut.
                    log.debug("upstream %s broke mid-response: %r", upstream.url, exc)
                    up.abort()
                    self.abort()
                    return False
                kind = type(event)
                if kind is h11.Data:
                    record.bytes_out += len(event.data)
                    self.send(event)
                    await self.drain()
                elif kind is h11.EndOfMessage:
                    self.send(h11.EndOfMessage())
                    break
                else:
                    up.abort()
                    self.abort()
                    return False
        except ChannelClosed:
            up.abort()
            raise _ClientAborted from None
        self.active_upstream = None
        pool.release(key, up)
        return not close

    async def _relay_counted_body(
        self,
        up: HttpChannel,
        pool: UpstreamPool,
        key: OriginKey,
        record: ExchangeRecord,
        length: int,
        read_timeout: float | None,
    ) -> bool:
        """Relay a body both heads frame with the same Content-Length, counted from h11's buffer and then
        straight from socket to socket (HttpChannel.relay_body); h11 is told only that it ended."""
        up.body_relayed = 0
        try:
            if up.conn.their_state is not h11.SEND_BODY:
                # Not a plain response body (e.g. the upstream switched protocols): nothing to count.
                raise ChannelClosed(f"upstream in state {up.conn.their_state!r} after the response head")
            await up.relay_body(self, length, read_timeout)
            up.body_received()
        except (ChannelTimeout, ChannelClosed, h11.ProtocolError) as exc:
            up.abort()
            if self.client_gone:
                raise _ClientAborted from exc
            # Mid-body there is no status left to send; closing tells the client the body is cut.
            log.debug("upstream broke mid-response: %r", exc)
            self.abort()
            return False
        finally:
            record.bytes_out = up.body_relayed
        self.active_upstream = None
        pool.release(key, up)
        try:
            await self.drain()
        except ChannelClosed:
            raise _ClientAborted from None
        return True

    async def _pump_request_body(self, up: HttpChannel, max_bytes: int) -> int:
        if self.conn.they_are_waiting_for_100_continue:
            self.send(h11.InformationalResponse(status_code=100, headers=[]))
        idle_timeout = self.runtime.limits.keepalive_idle_timeout_seconds
        total = 0
        while True:
            try:
                event = await self.next_event(idle_timeout)
            except h11.RemoteProtocolError as exc:
                raise _ClientBadBody(str(exc)) from exc
            except (ChannelClosed, ChannelTimeout) as exc:
                raise _ClientAborted from exc
            kind = type(event)
            if kind is h11.Data:
                total += len(event.data)
                if total > max_bytes:
                    raise _BodyTooLarge
                up.send(event)
                await up.drain()
                if up.bytes_received:
                    early = _buffered_response(up)
                    if early is not None:
                        raise _UpstreamAnswered(early)
            elif kind is h11.EndOfMessage:
                up.send(h11.EndOfMessage())
                return total
            else:
                raise _ClientAborted

    # Protected proxies --------------------------------------------------------------------------------

    async def _guard(
        self,
        record: ExchangeRecord,
        request: h11.Request,
        request_headers: list[tuple[bytes, bytes]],
        entry: ProxyEntry,
        path: str,
        content_length: int,
        chunked: bool,
    ) -> bool | _Guarded:
        """Run the gate for one request to a protected proxy. Either it is answered here (PRM, 401/403, a
        failed Mcp-* check; returns keep-alive) or it goes on: to `entry` (the AUTH_HOST proxy's for AS
        paths), with the client headers as the gate rewrote them, and the body if it had to be read."""
        runtime = self.runtime
        has_body = chunked or content_length > 0
        decision = decide(
            runtime.auth_policies[entry.hostname],
            runtime.auth_context(),
            scheme=effective_scheme(
                self.scheme.decode("ascii"), request_headers, trusted_peer=self.trusted_peer
            ),
            method=request.method,
            path=path,
            headers=request_headers,
            now=time.time(),
        )
        try:
            if type(decision) is Forward:
                check = decision.mcp_check
                if check is None:
                    return entry, decision.headers, None
                limit = min(MAX_CHECKED_BODY_BYTES, entry.max_request_body_bytes)
                body = await self._read_body(limit) if has_body else b""
                if body is None and limit < MAX_CHECKED_BODY_BYTES:
                    return self.answer_error(record, 413, "request body too large", close=True)
                rejected = check_body(check, body)
                if rejected is not None:
                    return self._answer(record, rejected, close=body is None)
                return entry, decision.headers, body if has_body else None
            if type(decision) is ToAuthorizationServer:
                auth_host = runtime.settings.auth_host
                auth_entry = runtime.table.exact.get(auth_host)
                if auth_entry is None or not auth_entry.enabled:
                    message = f"authorization server proxy {auth_host} is not available"
                    return self.answer_error(record, 502, message, close=has_body)
                return auth_entry, request_headers, None
            answer = cast(Answer, decision)
            # Read (and drop) a small body so the answer is not lost to a reset of a half-read connection.
            close = has_body and (
                self.conn.they_are_waiting_for_100_continue
                or await self._read_body(MAX_DISCARDED_BODY_BYTES) is None
            )
            return self._answer(record, answer, close=close)
        except _ClientBadBody as exc:
            return self.answer_error(record, 400, f"malformed request body: {exc}", close=True)

    async def _read_body(self, limit: int) -> bytes | None:
        """The whole request body, or None once it exceeds `limit` (the rest stays unread)."""
        if self.conn.they_are_waiting_for_100_continue:
            self.send(h11.InformationalResponse(status_code=100, headers=[]))
        idle_timeout = self.runtime.limits.keepalive_idle_timeout_seconds
        parts: list[bytes] = []
        total = 0
        while True:
            try:
                event = await self.next_event(idle_timeout)
            except h11.RemoteProtocolError as exc:
                raise _ClientBadBody(str(exc)) from exc
            except (ChannelClosed, ChannelTimeout) as exc:
                raise _ClientAborted from exc
            kind = type(event)
            if kind is h11.Data:
                data = cast(h11.Data, event).data
                total += len(data)
                if total > limit:
                    return None
                parts.append(data)
            elif kind is h11.EndOfMessage:
                return b"".join(parts)
            else:
                raise _ClientAborted

    def _answer(self, record: ExchangeRecord, answer: Answer, *, close: bool) -> bool:
        """Send a response the gate composed (JSON with its own headers)."""
        record.status = answer.status
        if self.conn.our_state is not h11.SEND_RESPONSE:
            self.abort()
            return False
        close = close or self.runtime.draining
        headers = [*answer.headers, (b"x-request-id", record.request_id.encode())]
        if answer.status != 204:
            headers.append((b"content-length", b"%d" % len(answer.body)))
        if close:
            headers.append((b"connection", b"close"))
        reason = HTTPStatus(answer.status).phrase.encode()
        self.send(h11.Response(status_code=answer.status, headers=headers, reason=reason))
        if answer.body and record.method != "HEAD":
            self.send(h11.Data(data=answer.body))
        self.send(h11.EndOfMessage())
        return not close

    # Answers of our own --------------------------------------------------------------------------------

    def _https_live(self, host: str) -> bool:
        """A certificate for `host` is being served by this process's HTTPS listener."""
        certificates = self.runtime.certificates
        return certificates is not None and certificates.current.has_certificate_for(host)

    def _redirect_to_https(self, record: ExchangeRecord, host: str, target: bytes, *, close: bool) -> bool:
        settings = self.runtime.settings
        location = https_location(host, target, settings.HTTPS_REDIRECT_PORT or settings.HTTPS_PORT)
        if location is None:
            return self.answer_error(record, 400, "Host header is not a valid DNS name", close=close)
        return self.answer_error(
            record,
            308,
            "redirecting to " + location.decode("ascii"),
            close=close,
            extra=[(b"location", location)],
        )

    async def _answer_acme(self, record: ExchangeRecord, target: bytes, *, close: bool) -> bool:
        try:
            answer = await answer_challenge(self.runtime.redis, target.decode("latin-1"))
        except Exception as exc:  # Redis down: the CA retries; never a traceback per probe
            log.warning("ACME challenge lookup failed: %s", exc)
            return self.answer_error(record, 503, "ACME challenge store unavailable", close=close)
        if answer.status != 200:
            message = answer.body.decode("ascii", "replace").strip()
            return self.answer_error(record, answer.status, message, close=close)
        record.status = 200
        self.runtime.metrics.acme_challenges_answered_total.inc()
        close = close or self.runtime.draining
        headers = [
            (b"content-type", answer.content_type.encode()),
            (b"content-length", str(len(answer.body)).encode()),
            (b"x-request-id", record.request_id.encode()),
        ]
        if close:
            headers.append((b"connection", b"close"))
        self.send(h11.Response(status_code=200, headers=headers, reason=b"OK"))
        self.send(h11.Data(data=answer.body))
        self.send(h11.EndOfMessage())
        return not close

    def answer_error(
        self,
        record: ExchangeRecord,
        status: int,
        message: str,
        *,
        close: bool = False,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> bool:
        record.status = status
        body = (message + "\n").encode("utf-8", "replace")
        conn = self.conn
        if conn.our_state is not h11.SEND_RESPONSE:
            self.abort()
            return False
        close = close or self.runtime.draining
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", record.request_id.encode()),
        ]
        if extra:
            headers.extend(extra)
        if close:
            headers.append((b"connection", b"close"))
        self.send(h11.Response(status_code=status, headers=headers, reason=_REASONS.get(status, "").encode()))
        self.send(h11.Data(data=body))
        self.send(h11.EndOfMessage())
        return not close

    def _write_error_and_close(self, status: int, message: str) -> None:
        """Answer outside h11 (its state may be ERROR) and close: malformed input, limits, overload."""
        body = (message + "\n").encode("utf-8", "replace")
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        ).encode()
        self.runtime.metrics.count_request(status)
        self.write_raw(head + body)
        self.close()

    def finish_record(self, record: ExchangeRecord) -> None:
        if record.finished:
            return
        record.finished = True
        runtime = self.runtime
        runtime.metrics.count_request(record.status)
        runtime.request_log.submit(
            RequestLogEntry(
                time=time.time(),
                client_ip=self.client_ip,
                host=record.host,
                method=record.method,
                path=record.path,
                status=record.status,
                bytes_in=record.bytes_in,
                bytes_out=record.bytes_out,
                duration_seconds=time.monotonic() - record.started,
                upstream=record.upstream,
                route_id=record.route_id or "",
                request_id=record.request_id,
            )
        )


class ExchangeRecord:
    """What the request log and metrics need about one exchange, filled in as it goes."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "finished",
        "host",
        "method",
        "path",
        "request_id",
        "route_id",
        "started",
        "status",
        "upstream",
    )

    def __init__(self, started: float, host: str, method: str, path: str, request_id: str) -> None:
        self.started = started
        self.host = host
        self.method = method
        self.path = path
        self.request_id = request_id
        self.status = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.upstream = ""
        self.route_id: str | None = None
        self.finished = False


_STATE_EVENTS: dict[tuple[bytes, tuple[tuple[bytes, bytes], ...]], h11.Request] = {}
_MAX_STATE_EVENTS = 64


def _request_state_event(method: bytes, state_headers: list[tuple[bytes, bytes]]) -> h11.Request:
    """The event h11's state machine needs for a request head we serialised (see HttpChannel.send_head).

    h11 reads only the method and the framing, keep-alive, upgrade and expect headers of a request it
    sends, never the target or the Host value, so bodiless requests share one prebuilt event per method
    and header shape instead of validating a new one each time."""
    shape = tuple(header for header in state_headers if header[0] != b"host")
    key = (method, shape)
    event = _STATE_EVENTS.get(key)
    if event is None:
        event = h11.Request(method=method, target=b"/", headers=[(b"host", b"x"), *shape], _parsed=True)
        # Methods are client-chosen tokens and Content-Length values unbounded: cache a bounded few.
        if len(_STATE_EVENTS) < _MAX_STATE_EVENTS and not any(n == b"content-length" for n, _ in shape):
            _STATE_EVENTS[key] = event
    return event


def _relayable_body_length(
    method: bytes, status: int, response_headers: list[tuple[bytes, bytes]], content_length: bytes
) -> int:
    """The body length a Content-Length response carries as h11 frames it, or -1 when the upstream framed
    it differently (then h11 relays it event by event)."""
    upstream_lengths = [value for name, value in response_headers if name in _FRAMING_HEADERS]
    if upstream_lengths != [content_length]:
        return -1
    if method == b"HEAD" or status in (204, 304):
        return 0
    return int(content_length)


def _buffered_response(up: HttpChannel) -> Any:
    """A response head the upstream sent before it stopped reading the request body, if any."""
    try:
        while True:
            event = up.conn.next_event()
            kind = type(event)
            if kind is h11.Response:
                return event
            if kind is not h11.InformationalResponse:
                return None
    except h11.ProtocolError:
        return None
