"""One client connection: the IO shell that reads requests, decides what answers them, and keeps the
connection alive between them.

Per connection there is one task (`_serve`) that runs the keep-alive loop: read a head (strictly checked by
protocol.request_head before h11 parses it), then `_exchange`: ACME challenges first, then the host in the
current route table, the proxy's scheme policy (308 to HTTPS once its certificate is live, 421 on a scheme it
does not serve), the auth gate for protected proxies (io.protected_exchange), and the relay (io.http_relay,
or io.websocket_relay for upgrades). Answers of our own (400/404/408/413/421/431/503, ...) are written here;
the relay maps upstream failures to 502/504. Unprotected proxies pay one truthiness check for the gate.

When the listener speaks PROXY protocol, the header is parsed first (only from trusted peers); the address it
carries becomes the client address for X-Forwarded-For and the request log. A PROXY header in front of TLS is
read by io.tls_listener before the handshake and arrives here as `client_address`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from typing import Any, cast

import h11

from data_plane.acme_challenge import CHALLENGE_PATH_PREFIX, answer_challenge
from data_plane.io.channel import ChannelClosed, ChannelTimeout, HttpChannel
from data_plane.io.exchange import ClientAborted, ClientBadBody, ExchangeRecord
from data_plane.io.http_relay import relay_http
from data_plane.io.protected_exchange import guard
from data_plane.io.websocket_relay import relay_websocket
from data_plane.protocol.forwarding import AssertedIdentity, ResponseCors, header_pairs
from data_plane.protocol.https_redirect import https_location
from data_plane.protocol.proxy_protocol import ProxyProtocolError, parse_proxy_header
from data_plane.protocol.request_head import check_head, find_head_end
from data_plane.protocol.request_target import TargetRejected, parse_request_target
from data_plane.protocol.websocket_handshake import is_websocket_upgrade
from data_plane.request_log import RequestLogEntry
from data_plane.routing.route_table import lookup_proxy, normalise_host, select_upstream
from data_plane.runtime import Runtime

log = logging.getLogger(__name__)

MAX_PROXY_HEADER_BYTES = 16 + 65535
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
        request_id = runtime.request_ids.next()
        host_raw = b""
        content_length = -1
        chunked = False
        upgrade = False
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
        # An answer of ours to a request with an unread body must close the connection.
        has_body = chunked or content_length > 0
        if not has_body:
            # A bodiless request has ended with its head: tell h11's state machine directly (what its
            # zero-length reader would yield from next_event, minus the reader) so the cycle can end.
            self.body_received()
        method = request.method
        parsed = parse_request_target(method, request.target, host_raw)
        if isinstance(parsed, TargetRejected):
            raw = request.target.decode("latin-1")
            record = ExchangeRecord(
                started, normalise_host(host_raw), method.decode("ascii"), raw, request_id
            )
            keep_alive = self.answer_error(record, 400, f"bad request target: {parsed.reason}", close=True)
            self.finish_record(record)
            return keep_alive
        # From here on only the normalised target exists: ACME, routing, auth and the upstream all see it.
        host = normalise_host(parsed.host)
        target = parsed.target
        path = parsed.path
        record = ExchangeRecord(started, host, method.decode("ascii"), target.decode("latin-1"), request_id)

        try:
            if path.startswith(CHALLENGE_PATH_PREFIX):
                # ACME HTTP-01 answers come from Redis before routing and auth, on any Host (issue 4).
                return await self._answer_acme(record, path, close=has_body)
            entry = lookup_proxy(runtime.table, host)
            if entry is None:
                return self.answer_error(record, 404, f"unknown host: {host}", close=has_body)
            if not entry.enabled:
                return self.answer_error(record, 503, f"proxy {entry.hostname} is disabled", close=has_body)
            if parsed.encoded_separator and not entry.allow_encoded_slashes:
                # Upstreams disagree on whether %2F splits a segment; the proxy must opt in to them.
                return self.answer_error(
                    record, 400, "encoded '/' or '\\' in the request path is not allowed", close=has_body
                )
            if self.scheme == b"http":
                if entry.redirect_http and entry.enable_https and self._https_live(host):
                    return self._redirect_to_https(record, host, target, close=has_body)
                if not entry.enable_http:
                    return self.answer_error(
                        record,
                        421,
                        f"proxy {entry.hostname} is served over HTTPS only",
                        close=has_body,
                    )
            elif not entry.enable_https:
                return self.answer_error(
                    record,
                    421,
                    f"proxy {entry.hostname} is not served over HTTPS",
                    close=has_body,
                )
            if content_length > entry.max_request_body_bytes:
                return self.answer_error(record, 413, "request body too large", close=True)
            body: bytes | None = None
            asserted: AssertedIdentity | None = None
            cors: ResponseCors | None = None
            policies = runtime.auth_policies
            if policies and entry.hostname in policies:
                # A protected proxy (data_plane.auth.gate); unprotected ones pay only the check above.
                guarded = await guard(
                    self, record, request, request_headers, entry, path, content_length, chunked
                )
                if isinstance(guarded, bool):
                    return guarded
                entry, request_headers, body = guarded.entry, guarded.headers, guarded.body
                asserted, cors = guarded.asserted, guarded.cors
            upstream, route_id = select_upstream(entry, record.method, path)
            record.route_id = route_id
            record.upstream = upstream.url
            if upgrade and is_websocket_upgrade(request.headers):
                return await relay_websocket(
                    self, request, target, request_headers, entry, upstream, record, asserted
                )
            return await relay_http(
                self,
                request,
                target,
                request_headers,
                entry,
                upstream,
                record,
                content_length,
                chunked,
                body,
                asserted,
                cors,
            )
        except ClientAborted:
            record.status = record.status or 499
            return False
        finally:
            self.active_upstream = None
            self.finish_record(record)

    def continue_if_expected(self) -> None:
        if self.conn.they_are_waiting_for_100_continue:
            self.send(h11.InformationalResponse(status_code=100, headers=[]))

    async def body_chunk(self) -> bytes | None:
        """The next piece of the request body, or None at its end. Bad framing raises ClientBadBody; a
        client that leaves or stays silent past the keep-alive idle timeout raises ClientAborted."""
        try:
            event = await self.next_event(self.runtime.limits.keepalive_idle_timeout_seconds)
        except h11.RemoteProtocolError as exc:
            raise ClientBadBody(str(exc)) from exc
        except (ChannelClosed, ChannelTimeout) as exc:
            raise ClientAborted from exc
        kind = type(event)
        if kind is h11.Data:
            return cast(h11.Data, event).data
        if kind is h11.EndOfMessage:
            return None
        raise ClientAborted

    # Protected proxies --------------------------------------------------------------------------------

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

    async def _answer_acme(self, record: ExchangeRecord, path: str, *, close: bool) -> bool:
        try:
            answer = await answer_challenge(self.runtime.redis, path)
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
