"""Relay a WebSocket upgrade: check the handshake, forward it, and on the upstream's valid 101 turn both
connections into a raw byte tunnel (back-pressure paired in io.stream) until either side closes.

The upstream connection is fresh and never returns to the pool. A config change does not touch an open tunnel:
it holds its own references to both connections, not to the route table.
"""

from __future__ import annotations

from data_plane.io.client_side import ClientSide
from data_plane.io.exchange import ExchangeRecord
from data_plane.io.stream import ChannelClosed, ChannelTimeout
from data_plane.io.upstream_pool import UpstreamConnectFailed
from data_plane.protocol.dispatch import Relay, Reply, RequestHead
from data_plane.protocol.forwarding import client_response_headers, serialise_head, upstream_request_headers
from data_plane.protocol.response_framing import UnsafeHead, head_bytes, plan_response
from data_plane.protocol.upstream_response import Informational, UpstreamProtocolError
from data_plane.protocol.websocket_handshake import UpgradeRejected, accept_is_valid, check_upgrade_request


async def relay_websocket(
    client: ClientSide, request: RequestHead, relay: Relay, record: ExchangeRecord
) -> bool:
    """Returns False: after a WebSocket (or a refused upgrade) the client connection is done."""
    checked = check_upgrade_request(request.method, request.http_version, request.headers)
    if isinstance(checked, UpgradeRejected):
        return client.answer(record, Reply(checked.status, checked.reason, True, checked.headers))
    key = checked
    if not client.awaiting_protocol_switch:
        return client.answer(record, Reply(400, "WebSocket upgrade request must not have a body", True))

    entry, upstream = relay.entry, relay.upstream
    headers, _host = upstream_request_headers(
        relay.headers,
        entry=entry,
        upstream_host_header=upstream.host_header,
        client_ip=client.client_ip,
        scheme=client.scheme,
        request_id=record.request_id.encode(),
        trusted_peer=client.trusted_peer,
        chunked=False,
        asserted=relay.asserted,
    )
    headers.append((b"connection", b"Upgrade"))
    headers.append((b"upgrade", b"websocket"))
    target = upstream.base_path.encode() + relay.target if upstream.base_path else relay.target
    head = serialise_head(b"GET %s HTTP/1.1" % target, headers)
    if head is None:
        return client.answer(record, Reply(502, "request headers cannot be sent upstream", True))
    try:
        up = await client.runtime.pool.connect(
            upstream, entry.verify_upstream_tls, entry.upstream_ca_bundle_pem, entry.connect_timeout_seconds
        )
    except UpstreamConnectFailed as exc:
        return client.answer(record, Reply(exc.status, exc.answer, True))
    try:
        up.start_request(b"GET", head, chunked=False)
        up.end_request()
        response = await up.response_head(entry.read_timeout_seconds)
    except ChannelTimeout:
        up.abort()
        return client.answer(record, Reply(504, "upstream did not answer in time", True))
    except UpstreamProtocolError as exc:
        up.abort()
        return client.answer(record, Reply(502, f"upstream sent an invalid response: {exc}", True))
    except ChannelClosed:
        up.abort()
        return client.answer(record, Reply(502, "upstream closed or reset the connection", True))

    request_id = record.request_id.encode()
    if type(response) is Informational:
        if not accept_is_valid(key, response.headers):
            up.abort()
            return client.answer(record, Reply(502, "upstream WebSocket handshake invalid", True))
        out_headers, _sse = client_response_headers(
            response.headers, entry=entry, request_id=request_id, close=False
        )
        out_headers.append((b"connection", b"Upgrade"))
        out_headers.append((b"upgrade", b"websocket"))
        try:
            wire = head_bytes(101, response.reason, out_headers)
        except UnsafeHead:
            up.abort()
            return client.answer(record, Reply(502, "upstream response head cannot be relayed", True))
        record.status = 101
        client.switch_protocols(wire, up)
        client.finish_record(record)
        await client.wait_closed()
        return False

    # The upstream refused the upgrade: relay its answer as an ordinary response, then close.
    out_headers, _sse = client_response_headers(
        response.headers, entry=entry, request_id=request_id, close=True
    )
    out_headers, plan = plan_response(
        out_headers, status=response.status, request_method=b"GET", client_http_11=True, keep_alive=False
    )
    try:
        wire = head_bytes(response.status, response.reason, out_headers)
    except UnsafeHead:
        up.abort()
        return client.answer(record, Reply(502, "upstream response head cannot be relayed", True))
    record.status = response.status
    client.begin_response(wire)
    try:
        record.bytes_out = await up.stream_body(client.stream, plan.framing, entry.read_timeout_seconds)
        await client.drain()
    except (ChannelTimeout, ChannelClosed, UpstreamProtocolError):
        client.abort()
    up.close()
    return False
