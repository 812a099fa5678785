"""Header rewriting between client and upstream: hop-by-hop removal, X-Forwarded-*, per-proxy set/remove.

Pure functions over h11-style header lists (lower-case name bytes, value bytes). Hop-by-hop headers are
connection-scoped (RFC 9110 7.6.1): they, and any header the Connection header names, never cross the proxy.
Client-sent X-Forwarded-* are kept (and appended to) only when the peer is a trusted proxy; otherwise
replaced."""

from __future__ import annotations

from collections.abc import Sequence

from data_plane.routing.route_table import ProxyEntry

Headers = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_FORWARDED = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-request-id", b"forwarded"}
)


def connection_tokens(headers: Sequence[tuple[bytes, bytes]]) -> frozenset[bytes]:
    tokens: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return frozenset(tokens)


def upstream_request_headers(
    headers: Sequence[tuple[bytes, bytes]],
    *,
    entry: ProxyEntry,
    upstream_host_header: bytes,
    client_ip: str,
    scheme: bytes,
    request_id: bytes,
    trusted_peer: bool,
    chunked: bool,
) -> tuple[Headers, bytes]:
    """Headers to send upstream and the original Host. Content-Length is kept; chunked is re-declared."""
    named = connection_tokens(headers)
    remove = entry.request_headers_remove
    out: Headers = []
    host = b""
    prior_xff = b""
    prior_proto = b""
    prior_host = b""
    for name, value in headers:
        if name == b"host":
            host = value
            continue
        if name in HOP_BY_HOP or name in named or name == b"expect":
            continue
        if name in _FORWARDED:
            if trusted_peer:
                if name == b"x-forwarded-for":
                    prior_xff = value if not prior_xff else prior_xff + b", " + value
                elif name == b"x-forwarded-proto":
                    prior_proto = value
                elif name == b"x-forwarded-host":
                    prior_host = value
                elif name == b"forwarded":
                    out.append((name, value))
            continue
        if name in remove:
            continue
        out.append((name, value))
    ip = client_ip.encode("ascii")
    out.append((b"host", host if entry.preserve_host_header else upstream_host_header))
    out.append((b"x-forwarded-for", prior_xff + b", " + ip if prior_xff else ip))
    out.append((b"x-forwarded-proto", prior_proto or scheme))
    out.append((b"x-forwarded-host", prior_host or host))
    out.append((b"x-request-id", request_id))
    if chunked:
        out.append((b"transfer-encoding", b"chunked"))
    if entry.request_headers_set:
        set_names = {n for n, _ in entry.request_headers_set}
        out = [h for h in out if h[0] not in set_names]
        out.extend(entry.request_headers_set)
    return out, host


def client_response_headers(
    headers: Sequence[tuple[bytes, bytes]],
    *,
    entry: ProxyEntry,
    request_id: bytes,
    close: bool,
) -> tuple[Headers, bool]:
    """Headers to send to the client, and whether the response is a server-sent-event stream."""
    named = connection_tokens(headers)
    remove = entry.response_headers_remove
    out: Headers = []
    sse = False
    for name, value in headers:
        if name in HOP_BY_HOP or name in named or name in remove:
            continue
        if name == b"content-type" and value[:17].lower() == b"text/event-stream":
            sse = True
        out.append((name, value))
    if sse:
        out.append((b"x-accel-buffering", b"no"))
    if entry.response_headers_set:
        set_names = {n for n, _ in entry.response_headers_set}
        out = [h for h in out if h[0] not in set_names]
        out.extend(entry.response_headers_set)
    out.append((b"x-request-id", request_id))
    if close:
        out.append((b"connection", b"close"))
    return out, sse
