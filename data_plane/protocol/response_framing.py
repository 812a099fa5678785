"""How a relayed response is framed for the client (sans-IO): its head as bytes and a body framer.

The rules are h11's (`Connection._clean_up_response_headers_for_sending`), which wrote these heads before
responses were serialised here: a response with Content-Length keeps it and its body goes through as is; one
without (the upstream sent it chunked or until close) is re-chunked for an HTTP/1.1 client, or sent until
close to an HTTP/1.0 one; HEAD, 204 and 304 have no body whatever their headers say; and when the
connection will not carry another request, `Connection: close` ends the head (merged into the upstream's
own Connection tokens, minus keep-alive; one line per token, as h11 wrote them). The headers come from
protocol.forwarding, already filtered; values were validated by the parsers they came from, and
`head_bytes` proves it by counting lines.
"""

from __future__ import annotations

from dataclasses import dataclass

from data_plane.protocol.forwarding import serialise_head
from data_plane.protocol.upstream_response import Framing

Headers = list[tuple[bytes, bytes]]


class UnsafeHead(ValueError):
    """A header value holds CR or LF (cannot happen with parsed input; refused rather than sent)."""


@dataclass(frozen=True, slots=True)
class ClientFraming:
    framing: Framing  # LENGTH: as is; CHUNKED: re-chunked; UNTIL_CLOSE: as is, then close; NONE: no body
    keep_alive: bool  # the connection may carry another request after this response


def plan_response(
    headers: Headers,
    *,
    status: int,
    request_method: bytes,
    client_http_11: bool,
    keep_alive: bool,
) -> tuple[Headers, ClientFraming]:
    """The headers to send (framing and Connection fixed up) and how the body is written.
    `keep_alive` is False when the client asked to close, the request was not read whole, or we drain."""
    if status in (204, 304) or status < 200:
        return _connection(headers, keep_alive), ClientFraming(Framing.NONE, keep_alive)
    has_length = False
    for name, _value in headers:
        if name == b"content-length":
            has_length = True
            break
    head_request = request_method == b"HEAD"
    if has_length:
        framing = Framing.NONE if head_request else Framing.LENGTH
        return _connection(headers, keep_alive), ClientFraming(framing, keep_alive)
    if client_http_11:
        headers = [*headers, (b"Transfer-Encoding", b"chunked")]
        framing = Framing.NONE if head_request else Framing.CHUNKED
        return _connection(headers, keep_alive), ClientFraming(framing, keep_alive)
    # An HTTP/1.0 client: the body runs until we close.
    keep_alive = keep_alive and head_request
    framing = Framing.NONE if head_request else Framing.UNTIL_CLOSE
    return _connection(headers, keep_alive), ClientFraming(framing, keep_alive)


def _connection(headers: Headers, keep_alive: bool) -> Headers:
    if keep_alive:
        return headers
    tokens = {b"close"}
    kept: Headers = []
    for header in headers:
        if header[0] == b"connection":
            tokens.update(t.strip().lower() for t in header[1].split(b",") if t.strip())
        else:
            kept.append(header)
    tokens.discard(b"keep-alive")
    kept.extend((b"Connection", token) for token in sorted(tokens))
    return kept


def head_bytes(status: int, reason: bytes, headers: Headers) -> bytes:
    """The wire form of a response head. Raises UnsafeHead if a value would add a line."""
    wire = serialise_head(b"HTTP/1.1 %d %s" % (status, reason), headers)
    if wire is None:
        raise UnsafeHead("a response header value holds CR or LF")
    return wire


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
