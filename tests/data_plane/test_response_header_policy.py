"""Response-header policy applied to relayed answers (sans-IO): HSTS replaces the upstream's value, a
protected proxy's CORS replaces the upstream's allowed origin and merges the MCP expose list with the
upstream's, and without a policy the upstream's headers pass unchanged (but for X-Request-Id: ours)."""

from __future__ import annotations

from data_plane.protocol.forwarding import (
    MCP_EXPOSED_HEADERS,
    ResponseCors,
    client_response_headers,
    merge_header_lists,
)
from data_plane.routing.route_table import ProxyEntry, build_table
from shared.models import ProxyTarget

UPSTREAM = [
    (b"access-control-expose-headers", b"X-Total"),
    (b"strict-transport-security", b"max-age=5"),
    (b"content-type", b"application/json"),
    (b"access-control-allow-origin", b"https://upstream-choice.example"),
    (b"x-request-id", b"upstream-id"),
]


def _entry() -> ProxyEntry:
    table = build_table(1, [ProxyTarget(hostname="a.test", target_url="http://127.0.0.1:1")], [])
    return table.exact["a.test"]


def test_merge_keeps_order_and_drops_repeats_case_insensitively() -> None:
    assert merge_header_lists(b"X-Total, mcp-session-id", MCP_EXPOSED_HEADERS) == (
        b"X-Total, mcp-session-id, MCP-Protocol-Version, WWW-Authenticate"
    )
    assert merge_header_lists(b"", b"A,, B ,a") == b"A, B"


def test_hsts_replaces_and_cors_expose_merges() -> None:
    out, _sse = client_response_headers(
        UPSTREAM,
        entry=_entry(),
        request_id=b"r",
        close=False,
        hsts=b"max-age=600",
        cors=ResponseCors(b"*"),
    )
    assert [v for n, v in out if n == b"strict-transport-security"] == [b"max-age=600"]
    assert [v for n, v in out if n == b"access-control-expose-headers"] == [
        b"X-Total, Mcp-Session-Id, MCP-Protocol-Version, WWW-Authenticate"
    ]
    assert [v for n, v in out if n == b"access-control-allow-origin"] == [b"*"]
    assert not any(n == b"vary" for n, _ in out)
    echoed, _sse = client_response_headers(
        UPSTREAM, entry=_entry(), request_id=b"r", close=False, cors=ResponseCors(b"https://app.example")
    )
    assert [v for n, v in echoed if n == b"access-control-allow-origin"] == [b"https://app.example"]
    assert (b"vary", b"Origin") in echoed


def test_without_a_policy_the_upstream_headers_pass_unchanged() -> None:
    out, _sse = client_response_headers(UPSTREAM, entry=_entry(), request_id=b"r", close=False)
    assert out[:4] == UPSTREAM[:4]
    assert out[4:] == [(b"x-request-id", b"r")]
