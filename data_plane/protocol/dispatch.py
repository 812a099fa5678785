"""What answers one request: the per-request decision as a pure function (request facts in, a value out).

`decide` runs the data plane's rules in order and returns what the connection must do; the connection
(io.client_connection) only carries it out:
- `Reply`: an answer of ours in plain text (404 unknown host, 503 disabled, 400 encoded separator, 308 to
  HTTPS once the host's certificate is served, 421 on a scheme the proxy does not serve, 413, 502 when the
  authorization server's proxy is missing);
- `GateReply`: an answer the auth gate composed for a protected proxy (PRM, CORS preflight, 401/403);
- `AcmeLookup`: an ACME HTTP-01 challenge, answered from Redis before routing and auth, on any host;
- `Relay`: send it upstream: which proxy and upstream, and the client headers as the gate left them, the
  identity to assert, CORS of the relayed answer, and an Mcp-* body check still to run (protected proxies)
  or the Mcp-* header values to log (unprotected ones, whose body is never read).
The request target was normalised before (protocol.request_target): routing, auth and the upstream all see
the same path. Unprotected proxies pay one truthiness check for the gate. Nothing here does I/O or reads the
clock (`now` comes in).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from data_plane.acme_challenge import CHALLENGE_PATH_PREFIX
from data_plane.auth.access_policy import ProxyAccessPolicy
from data_plane.auth.gate import (
    Answer,
    AuthContext,
    Forward,
    McpCheck,
    ToAuthorizationServer,
    effective_scheme,
)
from data_plane.auth.gate import decide as gate_decide
from data_plane.auth.mcp_headers import logged_fields
from data_plane.protocol.forwarding import AssertedIdentity, ResponseCors
from data_plane.protocol.https_redirect import https_location
from data_plane.protocol.request_target import RequestTarget
from data_plane.protocol.websocket_handshake import is_websocket_upgrade
from data_plane.routing.route_table import ProxyEntry, RouteTable, Upstream, lookup_proxy, select_upstream

Headers = list[tuple[bytes, bytes]]


class RequestHead(NamedTuple):
    """The facts of a client's request head that decisions and relays read, gathered once. (A NamedTuple,
    like the other per-request values here: immutable, and built in C rather than field by field.)"""

    method: bytes
    target: bytes  # as received; the normalised one is in RequestTarget
    http_version: bytes
    headers: Headers  # lower-case names
    host: bytes
    content_length: int  # -1 without Content-Length
    chunked: bool
    upgrade: bool
    keep_alive: bool  # h11's rule: HTTP/1.1 and no `close` token in Connection
    mcp_method: bytes | None = None  # the Mcp-Method / Mcp-Name headers (MCP 2026-07-28), when sent
    mcp_name: bytes | None = None

    @property
    def has_body(self) -> bool:
        return self.chunked or self.content_length > 0


_MCP_HEADERS = frozenset({b"mcp-method", b"mcp-name"})


def request_head(method: bytes, target: bytes, http_version: bytes, headers: Headers) -> RequestHead:
    host = b""
    content_length = -1
    chunked = upgrade = close = False
    mcp_method = mcp_name = None
    for name, value in headers:
        if name == b"host":
            host = value
        elif name == b"content-length":
            content_length = int(value)
        elif name == b"transfer-encoding":
            chunked = True
        elif name == b"upgrade":
            upgrade = True
        elif name == b"connection" and b"close" in value.lower():
            close = close or any(t.strip() == b"close" for t in value.lower().split(b","))
        elif name in _MCP_HEADERS:  # one set lookup for every other header, not two comparisons
            if name == b"mcp-method":
                mcp_method = value
            else:
                mcp_name = value
    keep_alive = http_version == b"1.1" and not close
    return RequestHead(
        method,
        target,
        http_version,
        headers,
        host,
        content_length,
        chunked,
        upgrade,
        keep_alive,
        mcp_method,
        mcp_name,
    )


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    message: str
    close: bool
    headers: tuple[tuple[bytes, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class GateReply:
    answer: Answer
    # The request has a body: read and drop a small one first (so the answer is not lost to a reset of a
    # half-read connection), close after a larger one.
    discard_body: bool


@dataclass(frozen=True, slots=True)
class AcmeLookup:
    path: str
    close: bool


class Relay(NamedTuple):
    entry: ProxyEntry
    upstream: Upstream
    route_id: str | None
    target: bytes  # normalised, without the upstream's base path
    headers: Headers  # the client's, as the gate left them
    asserted: AssertedIdentity | None  # None: unprotected, or forwarded to the authorization server
    cors: ResponseCors | None
    mcp_check: McpCheck | None
    websocket: bool
    login: str = ""  # who the request runs as (the gate's Forward.login), for the request log
    client_id: str = ""  # the token's OAuth client (Forward.client_id), for the request log
    # An unprotected proxy's Mcp-Method / Mcp-Name headers for the request log (mcp_headers.logged_fields:
    # well-formed values only, unchecked since its body is never read); None when it sent neither.
    mcp_logged: tuple[str, str] | None = None


Decision = Reply | GateReply | AcmeLookup | Relay


@dataclass(frozen=True, slots=True)
class Listener:
    """What the listener a request came in on contributes: its scheme and who the peer is."""

    scheme: bytes  # b"http" or b"https"
    trusted_peer: bool
    https_redirect_port: int


def decide(
    request: RequestHead,
    parsed: RequestTarget,
    host: str,
    *,
    table: RouteTable,
    listener: Listener,
    https_live: Callable[[str], bool],
    policies: Mapping[str, ProxyAccessPolicy | None],
    auth_context: Callable[[], AuthContext],
    auth_host: str,
    now: float,
) -> Decision:
    """`host` is the normalised Host (routing.normalise_host); `https_live(host)` whether this process serves
    a certificate for it; `policies` the protected proxies (hostname -> policy, None when unreadable)."""
    close = request.has_body  # an answer of ours to a request with an unread body must close
    path = parsed.path
    if path.startswith(CHALLENGE_PATH_PREFIX):
        return AcmeLookup(path, close)
    entry = lookup_proxy(table, host)
    if entry is None:
        return Reply(404, f"unknown host: {host}", close)
    if not entry.enabled:
        return Reply(503, f"proxy {entry.hostname} is disabled", close)
    if parsed.encoded_separator and not entry.allow_encoded_slashes:
        # Upstreams disagree on whether %2F splits a segment; the proxy must opt in to them.
        return Reply(400, "encoded '/' or '\\' in the request path is not allowed", close)
    if listener.scheme == b"http":
        if entry.redirect_http and entry.enable_https and https_live(host):
            location = https_location(host, parsed.target, listener.https_redirect_port)
            if location is None:
                return Reply(400, "Host header is not a valid DNS name", close)
            return Reply(308, "redirecting to " + location.decode("ascii"), close, ((b"location", location),))
        if not entry.enable_http:
            return Reply(421, f"proxy {entry.hostname} is served over HTTPS only", close)
    elif not entry.enable_https:
        return Reply(421, f"proxy {entry.hostname} is not served over HTTPS", close)
    if request.content_length > entry.max_request_body_bytes:
        return Reply(413, "request body too large", True)
    headers = request.headers
    asserted: AssertedIdentity | None = None
    login = client_id = ""
    cors: ResponseCors | None = None
    check: McpCheck | None = None
    logged: tuple[str, str] | None = None
    if policies and entry.hostname in policies:
        gate = gate_decide(
            policies[entry.hostname],
            auth_context(),
            scheme=effective_scheme(
                listener.scheme.decode("ascii"), headers, trusted_peer=listener.trusted_peer
            ),
            method=request.method,
            path=path,
            headers=headers,
            now=now,
        )
        if type(gate) is Forward:
            headers, asserted, cors, check = gate.headers, gate.asserted, gate.cors, gate.mcp_check
            login, client_id = gate.login, gate.client_id
        elif type(gate) is ToAuthorizationServer:
            auth_entry = table.exact.get(auth_host)
            if auth_entry is None or not auth_entry.enabled:
                return Reply(502, f"authorization server proxy {auth_host} is not available", close)
            entry = auth_entry
        else:
            assert type(gate) is Answer
            return GateReply(gate, discard_body=close)
    elif request.mcp_method is not None or request.mcp_name is not None:
        logged = logged_fields(request.mcp_method, request.mcp_name)
    upstream, route_id = select_upstream(entry, request.method.decode("ascii"), path)
    websocket = request.upgrade and is_websocket_upgrade(request.headers)
    return Relay(
        entry,
        upstream,
        route_id,
        parsed.target,
        headers,
        asserted,
        cors,
        check,
        websocket,
        login,
        client_id,
        logged,
    )
