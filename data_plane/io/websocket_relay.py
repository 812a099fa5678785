"""Relay a WebSocket upgrade: check the handshake, forward it, and on the upstream's valid 101 turn both
connections into a raw byte tunnel (back-pressure paired in io.channel) until either side closes.

The upstream connection is fresh and never returns to the pool. A config change does not touch an open tunnel:
it holds its own references to both connections, not to the route table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import h11

from data_plane.io.channel import ChannelClosed, ChannelTimeout
from data_plane.io.upstream_pool import (
    UpstreamBroken,
    UpstreamConnectFailed,
    read_response_head,
)
from data_plane.protocol.forwarding import (
    AssertedIdentity,
    client_response_headers,
    upstream_request_headers,
)
from data_plane.protocol.websocket_handshake import UpgradeRejected, accept_is_valid, check_upgrade_request
from data_plane.routing.route_table import ProxyEntry, Upstream

if TYPE_CHECKING:
    from data_plane.io.client_connection import ClientConnection
    from data_plane.io.exchange import ExchangeRecord


async def relay_websocket(
    client: ClientConnection,
    request: h11.Request,
    target: bytes,
    request_headers: list[tuple[bytes, bytes]],
    entry: ProxyEntry,
    upstream: Upstream,
    record: ExchangeRecord,
    asserted: AssertedIdentity | None = None,
) -> bool:
    """Returns False: after a WebSocket (or a refused upgrade) the client connection is done. `target` is
    the normalised request target, `request_headers` the client's headers as the auth gate left them."""
    checked = check_upgrade_request(request.method, request.http_version, request.headers)
    if isinstance(checked, UpgradeRejected):
        return client.answer_error(
            record, checked.status, checked.reason, close=True, extra=list(checked.headers)
        )
    key = checked
    if client.conn.their_state is not h11.MIGHT_SWITCH_PROTOCOL:  # type: ignore[attr-defined]
        return client.answer_error(record, 400, "WebSocket upgrade request must not have a body", close=True)

    headers, _host = upstream_request_headers(
        request_headers,
        entry=entry,
        upstream_host_header=upstream.host_header,
        client_ip=client.client_ip,
        scheme=client.scheme,
        request_id=record.request_id.encode(),
        trusted_peer=client.trusted_peer,
        chunked=False,
        asserted=asserted,
    )
    headers.append((b"connection", b"Upgrade"))
    headers.append((b"upgrade", b"websocket"))
    if upstream.base_path:
        target = upstream.base_path.encode() + target
    try:
        up = await client.runtime.pool.connect(
            upstream, entry.verify_upstream_tls, entry.upstream_ca_bundle_pem, entry.connect_timeout_seconds
        )
    except UpstreamConnectFailed as exc:
        return client.answer_error(record, exc.status, exc.answer, close=True)
    try:
        up.send(h11.Request(method=b"GET", target=target, headers=headers))
        up.send(h11.EndOfMessage())
        response = await read_response_head(up, entry.read_timeout_seconds)
    except ChannelTimeout:
        up.abort()
        return client.answer_error(record, 504, "upstream did not answer in time", close=True)
    except (ChannelClosed, h11.ProtocolError, UpstreamBroken):
        up.abort()
        return client.answer_error(record, 502, "upstream closed or reset the connection", close=True)

    request_id = record.request_id.encode()
    if type(response) is h11.InformationalResponse:
        if not accept_is_valid(key, response.headers):
            up.abort()
            return client.answer_error(record, 502, "upstream WebSocket handshake invalid", close=True)
        out_headers, _sse = client_response_headers(
            response.headers, entry=entry, request_id=request_id, close=False
        )
        out_headers.append((b"connection", b"Upgrade"))
        out_headers.append((b"upgrade", b"websocket"))
        record.status = 101
        client.send(h11.InformationalResponse(status_code=101, headers=out_headers, reason=response.reason))
        client.flush()
        # Bytes that arrived right behind either head belong to the WebSocket stream.
        client_rest = client.conn.trailing_data[0]
        upstream_rest = up.conn.trailing_data[0]
        if upstream_rest:
            client.write_raw(upstream_rest)
        if client_rest:
            up.write_raw(client_rest)
        client.start_tunnel(up)
        up.start_tunnel(client)
        if up.closed:
            client.close()
        client.finish_record(record)
        await client.wait_closed()
        return False

    # The upstream refused the upgrade: relay its answer as an ordinary response, then close.
    out_headers, _sse = client_response_headers(
        response.headers, entry=entry, request_id=request_id, close=True
    )
    record.status = response.status_code
    client.send(h11.Response(status_code=response.status_code, headers=out_headers, reason=response.reason))
    try:
        while True:
            event = await up.next_event(entry.read_timeout_seconds, client)
            if type(event) is not h11.Data:
                break
            record.bytes_out += len(event.data)
            client.send(event)
            await client.drain()
        client.send(h11.EndOfMessage())
    except (ChannelTimeout, ChannelClosed, h11.ProtocolError):
        client.abort()
    up.close()
    return False
