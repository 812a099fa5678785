"""Relay one request to its upstream and the answer back, in three steps:

1. `_send`: take a pooled connection or connect, write the request (head serialised by us; the body pumped
   from the client with back-pressure, an early upstream answer winning) and wait for the response head. A
   pooled connection the upstream had already closed is retried once for an idempotent bodiless request.
2. `_response_head`: the client's head (headers filtered by protocol.forwarding, framing by
   protocol.response_framing), queued to leave with the first body bytes.
3. `_body`: the body streamed from the upstream's socket to the client's as it arrives
   (UpstreamConnection.stream_body), then the upstream connection back to the pool if it may be reused.

Every failure before the response head is an answer of ours (502/504/413/400; an invalid response is a 502
naming why, and that connection is closed); a failure mid-body cuts the client connection, since no status
is left to send.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from data_plane.io.client_side import ClientSide
from data_plane.io.exchange import ClientAborted, ClientBadBody, ExchangeRecord
from data_plane.io.stream import ChannelClosed, ChannelTimeout
from data_plane.io.upstream_connection import UpstreamConnection
from data_plane.io.upstream_pool import OriginKey, UpstreamConnectFailed
from data_plane.protocol.dispatch import Relay, Reply, RequestHead
from data_plane.protocol.forwarding import client_response_headers, serialise_head, upstream_request_headers
from data_plane.protocol.response_framing import UnsafeHead, head_bytes, plan_response
from data_plane.protocol.upstream_response import Framing, ResponseHead, UpstreamProtocolError

log = logging.getLogger(__name__)

IDEMPOTENT_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})


class _BodyTooLarge(Exception):
    pass


class _UpstreamAnswered(Exception):
    """The upstream sent its response before the request body was fully sent (an early 413, a redirect)."""

    def __init__(self, head: ResponseHead) -> None:
        super().__init__("upstream answered early")
        self.head = head


@dataclass(frozen=True, slots=True)
class _Plan:
    framing: Framing  # how the body is written to the client
    keep_alive: bool  # the client connection may carry another request afterwards
    read_timeout_seconds: float | None  # None for an event stream


class _Stale(Exception):
    """A pooled connection the upstream had closed before our request reached it."""


async def relay_http(
    client: ClientSide, request: RequestHead, relay: Relay, record: ExchangeRecord, body: bytes | None
) -> bool:
    """`body` is the request body when it was already read whole (the Mcp-* check); returns keep-alive."""
    entry, upstream = relay.entry, relay.upstream
    headers, _host = upstream_request_headers(
        relay.headers,
        entry=entry,
        upstream_host_header=upstream.host_header,
        client_ip=client.client_ip,
        scheme=client.scheme,
        request_id=record.request_id.encode(),
        trusted_peer=client.trusted_peer,
        chunked=request.chunked,
        asserted=relay.asserted,
    )
    target = upstream.base_path.encode() + relay.target if upstream.base_path else relay.target
    head = serialise_head(b"%s %s HTTP/1.1" % (request.method, target), headers)
    if head is None:
        return client.answer(record, Reply(502, "request headers cannot be sent upstream", True))
    pool = client.runtime.pool
    key = pool.origin_key(upstream, entry.verify_upstream_tls, entry.upstream_ca_bundle_pem)
    try:
        sent = await _send(client, request, relay, record, body, head, key, retry=True)
    except _Stale:
        sent = await _send(client, request, relay, record, body, head, key, retry=False)
    if isinstance(sent, Reply):
        return client.answer(record, sent)
    up, response = sent
    plan = _response_head(client, request, relay, record, response)
    if plan is None:
        up.abort()
        return client.answer(record, Reply(502, "upstream response head cannot be relayed", True))
    return await _body(client, relay, record, up, response, plan, key)


async def _send(
    client: ClientSide,
    request: RequestHead,
    relay: Relay,
    record: ExchangeRecord,
    body: bytes | None,
    head: bytes,
    key: OriginKey,
    *,
    retry: bool,
) -> tuple[UpstreamConnection, ResponseHead] | Reply:
    """Connect (or reuse), send the request, wait for the response head; or the answer the client gets.
    Raises _Stale (only with `retry`) for a dead pooled connection, ClientAborted if the client left."""
    runtime = client.runtime
    pool = runtime.pool
    entry = relay.entry
    has_body = request.has_body
    up = pool.take_idle(key)
    reused = up is not None
    try:
        if up is None:
            up = await pool.connect(
                relay.upstream,
                entry.verify_upstream_tls,
                entry.upstream_ca_bundle_pem,
                entry.connect_timeout_seconds,
            )
        client.watch_upstream(up)
        sent_at = time.monotonic()
        up.start_request(request.method, head, chunked=request.chunked)
        if has_body:
            # Read the upstream while uploading, so an early answer is parsed before it hangs up.
            up.resume_reading()
            if body is None:
                record.bytes_in = await _pump_request_body(client, up, entry.max_request_body_bytes)
            else:
                # Already read whole (the Mcp-* check needed it): send it as the client framed it.
                up.send_body(body)
                up.end_request()
                await up.drain()
                record.bytes_in = len(body)
        else:
            up.end_request()
        # The request is fully read: keep reading the client (at most one chunk is buffered) so that
        # its departure is noticed while the upstream is quiet.
        client.resume_reading()
        response = await up.response_head(entry.read_timeout_seconds)
        runtime.metrics.upstream_latency_seconds.observe(time.monotonic() - sent_at)
        if type(response) is not ResponseHead:
            up.abort()
            return Reply(502, "upstream switched protocols on a request that did not ask for it", True)
        return up, response
    except UpstreamConnectFailed as exc:
        log.debug("upstream %s: %r", relay.upstream.url, exc)
        return Reply(exc.status, exc.answer, has_body)
    except ChannelTimeout:
        assert up is not None
        up.abort()
        return Reply(504, "upstream did not answer in time", True)
    except _UpstreamAnswered as answered:
        assert up is not None
        return up, answered.head
    except _BodyTooLarge:
        assert up is not None
        up.abort()
        return Reply(413, "request body too large", True)
    except ClientBadBody as exc:
        assert up is not None
        up.abort()
        return Reply(400, f"malformed request body: {exc}", True)
    except ClientAborted:
        if up is not None:
            up.abort()
        raise
    except UpstreamProtocolError as exc:
        assert up is not None
        up.abort()
        if client.gone:
            raise ClientAborted from exc
        log.info("upstream %s sent an invalid response: %s", relay.upstream.url, exc)
        return Reply(502, f"upstream sent an invalid response: {exc}", True)
    except ChannelClosed as exc:
        assert up is not None
        if client.gone:
            up.abort()
            raise ClientAborted from exc
        early = up.buffered_head() if has_body else None
        if early is not None:
            # The upstream answered (e.g. 413) and stopped reading the body: relay its answer.
            return up, early
        stale = reused and up.bytes_received == 0
        up.abort()
        if stale and retry and not has_body and request.method in IDEMPOTENT_METHODS:
            raise _Stale from exc
        log.debug("upstream %s failed: %r", relay.upstream.url, exc)
        return Reply(502, "upstream closed or reset the connection", True)


async def _pump_request_body(client: ClientSide, up: UpstreamConnection, max_bytes: int) -> int:
    client.continue_if_expected()
    total = 0
    while (data := await client.body_chunk()) is not None:
        total += len(data)
        if total > max_bytes:
            raise _BodyTooLarge
        up.send_body(data)
        await up.drain()
        if up.bytes_received:
            early = up.buffered_head()
            if early is not None:
                raise _UpstreamAnswered(early)
    up.end_request()
    return total


def _response_head(
    client: ClientSide, request: RequestHead, relay: Relay, record: ExchangeRecord, response: ResponseHead
) -> _Plan | None:
    """Queue the client's response head; returns how its body goes (None: the head holds what cannot be
    sent, which parsed input never does)."""
    entry = relay.entry
    close = client.runtime.draining or not client.request_complete
    out_headers, sse = client_response_headers(
        response.headers,
        entry=entry,
        request_id=record.request_id.encode(),
        close=close,
        hsts=entry.hsts_header if client.scheme == b"https" else b"",
        cors=relay.cors,
    )
    out_headers, plan = plan_response(
        out_headers,
        status=response.status,
        request_method=request.method,
        client_http_11=request.http_version == b"1.1",
        keep_alive=request.keep_alive and not close,
    )
    try:
        wire = head_bytes(response.status, response.reason, out_headers)
    except UnsafeHead:
        return None
    record.status = response.status
    client.begin_response(wire)
    # SSE: no read timeout on an open event stream (MCP-AUTH: Streamable HTTP).
    return _Plan(plan.framing, plan.keep_alive, None if sse else entry.read_timeout_seconds)


async def _body(
    client: ClientSide,
    relay: Relay,
    record: ExchangeRecord,
    up: UpstreamConnection,
    response: ResponseHead,
    plan: _Plan,
    key: OriginKey,
) -> bool:
    try:
        record.bytes_out = await up.stream_body(client.stream, plan.framing, plan.read_timeout_seconds)
    except (ChannelTimeout, ChannelClosed, UpstreamProtocolError) as exc:
        up.abort()
        if client.gone:
            raise ClientAborted from exc
        # Mid-body there is no status left to send; closing tells the client the body is cut.
        log.debug("upstream %s broke mid-response: %r", relay.upstream.url, exc)
        client.abort()
        return False
    client.watch_upstream(None)
    client.runtime.pool.release(key, up, response)
    try:
        await client.drain()
    except ChannelClosed:
        raise ClientAborted from None
    return plan.keep_alive and plan.framing is not Framing.UNTIL_CLOSE
