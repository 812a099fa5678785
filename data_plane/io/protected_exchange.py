"""The auth gate's side of an exchange on a protected proxy: run `decide`, then either answer here (PRM,
401/403, a failed Mcp-* body check) or say where the request goes on (the proxy itself, or the AUTH_HOST
proxy for authorization-server paths) with the client headers as the gate rewrote them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, cast

import h11

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
from data_plane.io.exchange import ClientBadBody, ExchangeRecord
from data_plane.protocol.forwarding import AssertedIdentity, ResponseCors
from data_plane.routing.route_table import ProxyEntry

if TYPE_CHECKING:
    from data_plane.io.client_connection import ClientConnection


@dataclass(frozen=True, slots=True)
class Guarded:
    """What the gate lets through: the proxy entry to use, the client headers as the gate left them, the
    identity to assert upstream (None when the request goes to the authorization server), the body if it
    had to be read, and the CORS headers of the relayed answer (a token-checked browser request)."""

    entry: ProxyEntry
    headers: list[tuple[bytes, bytes]]
    asserted: AssertedIdentity | None
    body: bytes | None
    cors: ResponseCors | None = None


async def guard(
    conn: ClientConnection,
    record: ExchangeRecord,
    request: h11.Request,
    request_headers: list[tuple[bytes, bytes]],
    entry: ProxyEntry,
    path: str,
    content_length: int,
    chunked: bool,
) -> bool | Guarded:
    """Run the gate for one request to a protected proxy. Either it is answered here (PRM, 401/403, a
    failed Mcp-* check; returns keep-alive) or it goes on: to `entry` (the AUTH_HOST proxy's for AS
    paths), with the client headers as the gate rewrote them, and the body if it had to be read."""
    runtime = conn.runtime
    has_body = chunked or content_length > 0
    decision = decide(
        runtime.auth_policies[entry.hostname],
        runtime.auth_context(),
        scheme=effective_scheme(conn.scheme.decode("ascii"), request_headers, trusted_peer=conn.trusted_peer),
        method=request.method,
        path=path,
        headers=request_headers,
        now=time.time(),
    )
    try:
        if type(decision) is Forward:
            check = decision.mcp_check
            if check is None:
                return Guarded(entry, decision.headers, decision.asserted, None, decision.cors)
            limit = min(MAX_CHECKED_BODY_BYTES, entry.max_request_body_bytes)
            body = await read_whole_body(conn, limit) if has_body else b""
            if body is None and limit < MAX_CHECKED_BODY_BYTES:
                return conn.answer_error(record, 413, "request body too large", close=True)
            rejected = check_body(check, body)
            if rejected is not None:
                return answer_gate(conn, record, rejected, close=body is None)
            return Guarded(
                entry, decision.headers, decision.asserted, body if has_body else None, decision.cors
            )
        if type(decision) is ToAuthorizationServer:
            auth_host = runtime.settings.auth_host
            auth_entry = runtime.table.exact.get(auth_host)
            if auth_entry is None or not auth_entry.enabled:
                message = f"authorization server proxy {auth_host} is not available"
                return conn.answer_error(record, 502, message, close=has_body)
            return Guarded(auth_entry, request_headers, None, None)
        answer = cast(Answer, decision)
        # Read (and drop) a small body so the answer is not lost to a reset of a half-read connection.
        close = has_body and (
            conn.conn.they_are_waiting_for_100_continue
            or await read_whole_body(conn, MAX_DISCARDED_BODY_BYTES) is None
        )
        return answer_gate(conn, record, answer, close=close)
    except ClientBadBody as exc:
        return conn.answer_error(record, 400, f"malformed request body: {exc}", close=True)


async def read_whole_body(conn: ClientConnection, limit: int) -> bytes | None:
    """The whole request body, or None once it exceeds `limit` (the rest stays unread)."""
    conn.continue_if_expected()
    parts: list[bytes] = []
    total = 0
    while (data := await conn.body_chunk()) is not None:
        total += len(data)
        if total > limit:
            return None
        parts.append(data)
    return b"".join(parts)


def answer_gate(conn: ClientConnection, record: ExchangeRecord, answer: Answer, *, close: bool) -> bool:
    """Send a response the gate composed (JSON with its own headers)."""
    record.status = answer.status
    if conn.conn.our_state is not h11.SEND_RESPONSE:
        conn.abort()
        return False
    close = close or conn.runtime.draining
    headers = [*answer.headers, (b"x-request-id", record.request_id.encode())]
    if answer.status != 204:
        headers.append((b"content-length", b"%d" % len(answer.body)))
    if close:
        headers.append((b"connection", b"close"))
    reason = HTTPStatus(answer.status).phrase.encode()
    conn.send(h11.Response(status_code=answer.status, headers=headers, reason=reason))
    if answer.body and record.method != "HEAD":
        conn.send(h11.Data(data=answer.body))
    conn.send(h11.EndOfMessage())
    return not close
