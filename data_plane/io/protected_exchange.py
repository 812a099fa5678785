"""The I/O half of the auth gate's decisions (the decision itself is data_plane.auth.gate, run by
protocol.dispatch): send an answer the gate composed, after reading and dropping a small request body so the
answer is not lost to a reset of a half-read connection; and read a body whole for the Mcp-* check before
anything goes upstream."""

from __future__ import annotations

from data_plane.auth.gate import MAX_CHECKED_BODY_BYTES, MAX_DISCARDED_BODY_BYTES, check_body
from data_plane.io.client_side import ClientSide
from data_plane.io.exchange import ClientBadBody, ExchangeRecord
from data_plane.protocol.dispatch import GateReply, Relay, Reply, RequestHead


async def answer_gate(client: ClientSide, record: ExchangeRecord, reply: GateReply) -> bool:
    """Send the gate's answer; returns keep-alive."""
    try:
        close = reply.discard_body and (
            client.waiting_for_continue or await read_whole_body(client, MAX_DISCARDED_BODY_BYTES) is None
        )
    except ClientBadBody as exc:
        return client.answer(record, Reply(400, f"malformed request body: {exc}", True))
    answer = reply.answer
    return client.send_composed(record, answer.status, answer.headers, answer.body, close=close)


async def checked_body(
    client: ClientSide, request: RequestHead, relay: Relay, record: ExchangeRecord
) -> bytes | bool:
    """The request body, read whole and found to agree with its Mcp-Method / Mcp-Name headers; or the
    request was answered here (returns keep-alive)."""
    check = relay.mcp_check
    assert check is not None
    limit = min(MAX_CHECKED_BODY_BYTES, relay.entry.max_request_body_bytes)
    try:
        body = await read_whole_body(client, limit) if request.has_body else b""
    except ClientBadBody as exc:
        return client.answer(record, Reply(400, f"malformed request body: {exc}", True))
    if body is None and limit < MAX_CHECKED_BODY_BYTES:
        return client.answer(record, Reply(413, "request body too large", True))
    rejected = check_body(check, body)
    if rejected is not None:
        return client.send_composed(
            record, rejected.status, rejected.headers, rejected.body, close=body is None
        )
    assert body is not None
    return body


async def read_whole_body(client: ClientSide, limit: int) -> bytes | None:
    """The whole request body, or None once it exceeds `limit` (the rest stays unread)."""
    client.continue_if_expected()
    parts: list[bytes] = []
    total = 0
    while (data := await client.body_chunk()) is not None:
        total += len(data)
        if total > limit:
            return None
        parts.append(data)
    return b"".join(parts)
