"""Relay one request to its upstream and the answer back: the keep-alive pool with one retry of a stale
idempotent request, the request body pumped with back-pressure (an early upstream answer wins), and the
response relayed either socket to socket (Content-Length bodies framed alike on both sides) or event by
event through h11 (chunked, SSE, close-delimited). Every failure before the response head is an answer of
ours (502/504/413/400); a failure mid-body closes the client connection, since no status is left to send."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import h11

from data_plane.io.channel import ChannelClosed, ChannelTimeout, HttpChannel
from data_plane.io.exchange import ClientAborted, ClientBadBody, ExchangeRecord
from data_plane.io.upstream_pool import (
    OriginKey,
    UpstreamBroken,
    UpstreamConnectFailed,
    UpstreamPool,
    read_response_head,
)
from data_plane.protocol.forwarding import (
    AssertedIdentity,
    ResponseCors,
    client_response_headers,
    header_pairs,
    serialise_head,
    upstream_request_headers,
)
from data_plane.routing.route_table import ProxyEntry, Upstream

if TYPE_CHECKING:
    from data_plane.io.client_connection import ClientConnection

log = logging.getLogger(__name__)

IDEMPOTENT_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
_FRAMING_HEADERS = frozenset({b"content-length", b"transfer-encoding"})


class _BodyTooLarge(Exception):
    pass


class _UpstreamAnswered(Exception):
    """The upstream sent its response before the request body was fully sent (an early 413, a redirect)."""

    def __init__(self, response: Any) -> None:
        super().__init__("upstream answered early")
        self.response = response


async def relay_http(
    conn: ClientConnection,
    request: h11.Request,
    target: bytes,
    request_headers: list[tuple[bytes, bytes]],
    entry: ProxyEntry,
    upstream: Upstream,
    record: ExchangeRecord,
    content_length: int,
    chunked: bool,
    body: bytes | None = None,
    asserted: AssertedIdentity | None = None,
    cors: ResponseCors | None = None,
) -> bool:
    runtime = conn.runtime
    pool = runtime.pool
    headers, _host = upstream_request_headers(
        request_headers,
        entry=entry,
        upstream_host_header=upstream.host_header,
        client_ip=conn.client_ip,
        scheme=conn.scheme,
        request_id=record.request_id.encode(),
        trusted_peer=conn.trusted_peer,
        chunked=chunked,
        asserted=asserted,
    )
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
            conn.active_upstream = up
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
                    record.bytes_in = await _pump_request_body(conn, up, entry.max_request_body_bytes)
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
            conn._resume_reading()
            response = await read_response_head(up, entry.read_timeout_seconds, sent_mark)
            runtime.metrics.upstream_latency_seconds.observe(time.monotonic() - sent_at)
            break
        except UpstreamConnectFailed as exc:
            log.debug("upstream %s: %r", upstream.url, exc)
            return conn.answer_error(record, exc.status, exc.answer, close=has_body)
        except ChannelTimeout:
            assert up is not None
            up.abort()
            return conn.answer_error(record, 504, "upstream did not answer in time", close=True)
        except _UpstreamAnswered as answered:
            assert up is not None
            response = answered.response
            break
        except _BodyTooLarge:
            assert up is not None
            up.abort()
            return conn.answer_error(record, 413, "request body too large", close=True)
        except ClientBadBody as exc:
            assert up is not None
            up.abort()
            return conn.answer_error(record, 400, f"malformed request body: {exc}", close=True)
        except ClientAborted:
            if up is not None:
                up.abort()
            raise
        except (ChannelClosed, h11.ProtocolError, UpstreamBroken) as exc:
            assert up is not None
            if conn.client_gone:
                up.abort()
                raise ClientAborted from exc
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
            return conn.answer_error(record, 502, "upstream closed or reset the connection", close=True)

    close = runtime.draining or conn.conn.their_state is not h11.DONE
    response_headers = header_pairs(response.headers)
    out_headers, sse = client_response_headers(
        response_headers,
        entry=entry,
        request_id=record.request_id.encode(),
        close=close,
        hsts=entry.hsts_header if conn.scheme == b"https" else b"",
        cors=cors,
    )
    status = response.status_code
    record.status = status
    response_head = None
    parser = conn.conn
    # h11 rewrites a response head only to re-frame it (no Content-Length, or an HTTP/1.0 client) or to
    # add Connection: close; when it would not, we serialise it ourselves (see HttpChannel.send_head).
    body_length = -1
    if not close and parser.their_http_version == b"1.1" and parser._cstate.keep_alive:
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
        conn._out.append(response_head[0])
        conn.response_untracked = True
        return await _relay_counted_body(conn, up, pool, key, record, body_length, read_timeout)
    if response_head is None:
        conn.send(h11.Response(status_code=status, headers=out_headers, reason=response.reason))
    else:
        wire, state_headers = response_head
        conn.send_head(
            h11.Response(status_code=status, headers=state_headers, reason=response.reason, _parsed=True),
            wire,
        )
    try:
        while True:
            try:
                event = await up.next_event(read_timeout, conn)
            except (ChannelTimeout, ChannelClosed, h11.ProtocolError) as exc:
                # Mid-body there is no status left to send; closing tells the client the body is cut.
                log.debug("upstream %s broke mid-response: %r", upstream.url, exc)
                up.abort()
                conn.abort()
                return False
            kind = type(event)
            if kind is h11.Data:
                record.bytes_out += len(event.data)
                conn.send(event)
                await conn.drain()
            elif kind is h11.EndOfMessage:
                conn.send(h11.EndOfMessage())
                break
            else:
                up.abort()
                conn.abort()
                return False
    except ChannelClosed:
        up.abort()
        raise ClientAborted from None
    conn.active_upstream = None
    pool.release(key, up)
    return not close


async def _pump_request_body(conn: ClientConnection, up: HttpChannel, max_bytes: int) -> int:
    conn.continue_if_expected()
    total = 0
    while (data := await conn.body_chunk()) is not None:
        total += len(data)
        if total > max_bytes:
            raise _BodyTooLarge
        up.send(h11.Data(data=data))
        await up.drain()
        if up.bytes_received:
            early = _buffered_response(up)
            if early is not None:
                raise _UpstreamAnswered(early)
    up.send(h11.EndOfMessage())
    return total


async def _relay_counted_body(
    conn: ClientConnection,
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
        await up.relay_body(conn, length, read_timeout)
        up.body_received()
    except (ChannelTimeout, ChannelClosed, h11.ProtocolError) as exc:
        up.abort()
        if conn.client_gone:
            raise ClientAborted from exc
        # Mid-body there is no status left to send; closing tells the client the body is cut.
        log.debug("upstream broke mid-response: %r", exc)
        conn.abort()
        return False
    finally:
        record.bytes_out = up.body_relayed
    conn.active_upstream = None
    pool.release(key, up)
    try:
        await conn.drain()
    except ChannelClosed:
        raise ClientAborted from None
    return True


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
