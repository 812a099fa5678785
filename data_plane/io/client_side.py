"""The one interface through which relays and the auth gate's body checks use the client connection.

io.client_connection implements it; io.http_relay, io.websocket_relay and io.protected_exchange see only
this, so none of them imports the connection (no import circle) or touches its internals. Everything a
relay may do to the client is named here, and nothing else.
"""

from __future__ import annotations

from typing import Protocol

from data_plane.io.exchange import ExchangeRecord
from data_plane.io.stream import Stream
from data_plane.io.upstream_connection import UpstreamConnection
from data_plane.protocol.dispatch import Reply
from data_plane.runtime import Runtime


class ClientSide(Protocol):
    runtime: Runtime
    client_ip: str
    scheme: bytes  # b"http" or b"https": the listener's
    trusted_peer: bool  # in TRUSTED_PROXY_CIDRS: its forwarding headers are believed

    @property
    def gone(self) -> bool:
        """The client closed its side or the connection is lost: it has abandoned the request."""

    @property
    def request_complete(self) -> bool:
        """The whole request (body included) has been read, so the connection could carry another."""

    @property
    def stream(self) -> Stream:
        """The client's connection as a byte sink, for streaming a response body into it."""

    def answer(self, record: ExchangeRecord, reply: Reply) -> bool:
        """Send an answer of ours (only before any response byte); returns whether to keep alive."""

    def send_composed(
        self,
        record: ExchangeRecord,
        status: int,
        headers: tuple[tuple[bytes, bytes], ...],
        body: bytes,
        *,
        close: bool,
    ) -> bool:
        """Send an answer whose content the auth gate composed; returns whether to keep alive."""

    def begin_response(self, head: bytes) -> None:
        """Queue a relayed response's head; it leaves with the first body bytes (or at the next flush)."""

    async def body_chunk(self) -> bytes | None:
        """The next piece of the request body, None at its end. Raises ClientBadBody, ClientAborted."""

    def continue_if_expected(self) -> None:
        """Send `100 Continue` if the client waits for it before its body."""

    @property
    def waiting_for_continue(self) -> bool:
        """The client sent `Expect: 100-continue` and has not been told to go on."""

    def resume_reading(self) -> None:
        """Keep reading the client while the upstream is quiet, so that its departure is noticed."""

    def watch_upstream(self, upstream: UpstreamConnection | None) -> None:
        """The upstream connection serving this request, aborted at once if the client leaves."""

    async def drain(self) -> None: ...

    def abort(self) -> None: ...

    def finish_record(self, record: ExchangeRecord) -> None:
        """Log and count the exchange now (a WebSocket's before its tunnel, which may last for hours)."""

    # WebSocket ------------------------------------------------------------------------------------------

    @property
    def awaiting_protocol_switch(self) -> bool:
        """The upgrade request was read whole (it had no body)."""

    def switch_protocols(self, head: bytes, upstream: UpstreamConnection) -> None:
        """Write the 101 head and make both connections one raw tunnel: bytes that followed either head
        go on to the other side first."""

    async def wait_closed(self) -> None: ...
