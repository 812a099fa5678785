"""Header rewriting between client and upstream: hop-by-hop removal, identity and forwarding headers,
per-proxy set/remove.

Pure functions over h11-style header lists (lower-case name bytes, value bytes). On the way upstream the
client's headers are filtered first and ours added after, so nothing a client sends can remove or imitate
a header we add:
- Hop-by-hop headers (RFC 9110 7.6.1) and those the client's Connection header names never cross; a
  Connection header cannot name Host or Content-Length (they frame this request).
- Identity headers (IDENTITY_HEADERS, IDENTITY_HEADER_PREFIXES and the proxy's own identity header names)
  say who the user is: on a protected proxy every client copy is dropped and the auth gate's are added; an
  unprotected proxy asserts none and passes them only from a peer in TRUSTED_PROXY_CIDRS (an authenticating
  proxy in front).
- Forwarding headers (FORWARDING_HEADERS, FORWARDING_HEADER_PREFIXES) say where the request came from: from
  a peer in TRUSTED_PROXY_CIDRS, X-Forwarded-For/-Proto/-Host are folded into ours and the others kept; from
  anyone else all are dropped. X-Request-Id is always ours.
- A name with `_` is dropped when its `-` spelling is one of the above or a header this proxy reads, sets or
  removes: CGI and WSGI servers read `X_Auth_User` as X-Auth-User (both become HTTP_X_AUTH_USER).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
# Who the user is, as authenticating proxies and identity-aware load balancers spell it.
IDENTITY_HEADERS = frozenset(
    {
        b"x-forwarded-user",
        b"x-forwarded-email",
        b"x-forwarded-preferred-username",
        b"x-forwarded-groups",
        b"x-forwarded-access-token",
        b"remote-user",
        b"x-user",
        b"x-email",
        b"x-webauth-user",
        b"cf-access-authenticated-user-email",
        b"cf-access-jwt-assertion",
    }
)
IDENTITY_HEADER_PREFIXES = (
    b"x-auth-",
    b"x-remote-",
    b"x-authenticated-",
    b"x-ms-client-principal",
    b"x-goog-authenticated-user-",
    b"x-amzn-oidc-",
)
# Where the request came from: client address, scheme, host, port or original URL as a proxy saw them.
FORWARDING_HEADERS = frozenset(
    {
        b"forwarded",
        b"x-real-ip",
        b"x-client-ip",
        b"true-client-ip",
        b"cf-connecting-ip",
        b"fastly-client-ip",
        b"x-cluster-client-ip",
        b"client-ip",
        b"x-host",
        b"x-rewrite-url",
        b"x-url-scheme",
        b"front-end-https",
        b"x-request-id",
    }
)
FORWARDING_HEADER_PREFIXES = (b"x-forwarded-", b"x-original-")
# Headers the data plane reads to frame, route or judge a request: a `_` spelling of them is never passed.
_READ = frozenset(
    {b"host", b"content-length", b"expect", b"authorization", b"origin", b"mcp-method", b"mcp-name"}
)
# What a Connection header may not remove: it would unframe the request we send.
_UNNAMEABLE = frozenset({b"host", b"content-length"})


def is_identity_header(name: bytes) -> bool:
    """`name` in lower case with `-` (see canonical_name)."""
    return name in IDENTITY_HEADERS or name.startswith(IDENTITY_HEADER_PREFIXES)


def is_forwarding_header(name: bytes) -> bool:
    """`name` in lower case with `-`; identity headers are checked first (X-Forwarded-User is identity)."""
    return name in FORWARDING_HEADERS or name.startswith(FORWARDING_HEADER_PREFIXES)


def canonical_name(name: bytes) -> bytes:
    """A header name as CGI/WSGI servers read it: `_` is `-` (h11 has lower-cased it already)."""
    return name.replace(b"_", b"-")


@dataclass(frozen=True, slots=True)
class AssertedIdentity:
    """A protected proxy's identity headers for one request: `names` are the proxy's own (canonical; client
    copies are dropped in every spelling, as are all identity headers), `headers` what the auth gate asserts
    from the verified token (none on a public path)."""

    names: frozenset[bytes]
    headers: tuple[tuple[bytes, bytes], ...] = ()


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
    asserted: AssertedIdentity | None = None,
) -> tuple[Headers, bytes]:
    """Headers to send upstream and the original Host. Content-Length is kept; chunked is re-declared.
    `asserted` is None for an unprotected proxy (and requests forwarded to the authorization server)."""
    named = connection_tokens(headers) - _UNNAMEABLE
    remove = entry.request_headers_remove
    own_identity = asserted.names if asserted is not None else frozenset()
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
        if b"_" in name and _shadows_ours(canonical_name(name), entry, own_identity):
            continue
        if name in remove:
            continue
        if name in own_identity or is_identity_header(name):
            if asserted is None and trusted_peer:
                out.append((name, value))
            continue
        if is_forwarding_header(name):
            if trusted_peer:
                if name == b"x-forwarded-for":
                    prior_xff = value if not prior_xff else prior_xff + b", " + value
                elif name == b"x-forwarded-proto":
                    prior_proto = value
                elif name == b"x-forwarded-host":
                    prior_host = value
                elif name != b"x-request-id":
                    out.append((name, value))
            continue
        out.append((name, value))
    ip = client_ip.encode("ascii")
    out.append((b"host", host if entry.preserve_host_header else upstream_host_header))
    out.append((b"x-forwarded-for", prior_xff + b", " + ip if prior_xff else ip))
    out.append((b"x-forwarded-proto", prior_proto or scheme))
    out.append((b"x-forwarded-host", prior_host or host))
    out.append((b"x-request-id", request_id))
    if asserted is not None:
        out.extend(asserted.headers)
    if chunked:
        out.append((b"transfer-encoding", b"chunked"))
    if entry.request_headers_set:
        set_names = {n for n, _ in entry.request_headers_set}
        out = [h for h in out if h[0] not in set_names]
        out.extend(entry.request_headers_set)
    return out, host


def _shadows_ours(canonical: bytes, entry: ProxyEntry, own_identity: frozenset[bytes]) -> bool:
    """Whether a `_` header name reads, once `_` is `-`, as a header we drop, set, replace or read."""
    return (
        canonical in HOP_BY_HOP
        or canonical in _READ
        or canonical in own_identity
        or is_identity_header(canonical)
        or is_forwarding_header(canonical)
        or canonical in entry.request_headers_remove
        or any(canonical == set_name for set_name, _ in entry.request_headers_set)
    )


# What Streamable HTTP clients in browsers need to read from our answers and the MCP server's (MCP-AUTH).
MCP_EXPOSED_HEADERS = b"Mcp-Session-Id, MCP-Protocol-Version, WWW-Authenticate"
# The upstream's CORS answer is replaced by the protected proxy's (ResponseCors).
_UPSTREAM_CORS = frozenset({b"access-control-allow-origin", b"access-control-allow-credentials"})


@dataclass(frozen=True, slots=True)
class ResponseCors:
    """CORS of a protected proxy's relayed answer to a browser (a token-checked request with Origin): the
    proxy's policy replaces the upstream's Access-Control-Allow-Origin (and -Credentials: bearer tokens are
    not credentials in the CORS sense), and MCP_EXPOSED_HEADERS join the upstream's expose list."""

    allow_origin: bytes  # b"*", or the request's Origin echoed (then `Vary: Origin`)


def merge_header_lists(first: bytes, second: bytes) -> bytes:
    """Two comma-separated header-name lists as one, without repeats (case-insensitive; `*` kept)."""
    merged: list[bytes] = []
    seen: set[bytes] = set()
    for item in (*first.split(b","), *second.split(b",")):
        name = item.strip()
        if name and name.lower() not in seen:
            seen.add(name.lower())
            merged.append(name)
    return b", ".join(merged)


def client_response_headers(
    headers: Sequence[tuple[bytes, bytes]],
    *,
    entry: ProxyEntry,
    request_id: bytes,
    close: bool,
    hsts: bytes = b"",
    cors: ResponseCors | None = None,
) -> tuple[Headers, bool]:
    """Headers to send to the client, and whether the response is a server-sent-event stream.

    `hsts` (HTTPS responses of a proxy with an HSTS policy) replaces any Strict-Transport-Security header the
    upstream sent: the proxy's policy is the one that holds for the public hostname. `cors` (a protected
    proxy answering a browser request) sets Access-Control-Allow-Origin and merges MCP_EXPOSED_HEADERS into
    Access-Control-Expose-Headers, so a web MCP client can read the answer whatever the upstream says.
    X-Request-Id is ours: an upstream's own is dropped rather than sent twice."""
    named = connection_tokens(headers)
    remove = entry.response_headers_remove
    out: Headers = []
    sse = False
    expose = MCP_EXPOSED_HEADERS if cors is not None else b""
    for name, value in headers:
        if name in HOP_BY_HOP or name in named or name in remove or name == b"x-request-id":
            continue
        if name == b"content-type" and value[:17].lower() == b"text/event-stream":
            sse = True
        elif hsts and name == b"strict-transport-security":
            continue
        elif cors is not None and name in _UPSTREAM_CORS:
            continue
        elif cors is not None and name == b"access-control-expose-headers":
            expose = merge_header_lists(value, expose)
            continue
        out.append((name, value))
    if sse:
        out.append((b"x-accel-buffering", b"no"))
    if cors is not None:
        out.append((b"access-control-allow-origin", cors.allow_origin))
        if cors.allow_origin != b"*":
            out.append((b"vary", b"Origin"))
        out.append((b"access-control-expose-headers", expose))
    if entry.response_headers_set:
        # The proxy's configured response headers win, CORS ones included.
        set_names = {n for n, _ in entry.response_headers_set}
        out = [h for h in out if h[0] not in set_names]
        out.extend(entry.response_headers_set)
    if hsts:
        out.append((b"strict-transport-security", hsts))
    out.append((b"x-request-id", request_id))
    if close:
        out.append((b"connection", b"close"))
    return out, sse


def serialise_head(start_line: bytes, headers: Headers) -> bytes | None:
    """The wire form of a head (start line without CRLF, then the headers), or None if it is unsafe.

    h11 would validate every name and value again; ours were validated already (by h11's parser on the way
    in, by the models for configured headers), so a byte join is enough. The line count proves the
    invariant instead of trusting it: a stray CR or LF anywhere would add one."""
    parts = [start_line, b"\r\n"]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    wire = b"".join(parts)
    lines = len(headers) + 2
    if wire.count(b"\n") != lines or wire.count(b"\r") != lines:
        return None
    return wire
