"""Response-header policy applied to relayed answers (sans-IO): HSTS replaces the upstream's value, the MCP
CORS expose list merges with the upstream's, and without a policy the upstream's headers pass unchanged."""

from __future__ import annotations

from data_plane.protocol.forwarding import MCP_EXPOSED_HEADERS, client_response_headers, merge_header_lists
from data_plane.routing.route_table import ProxyEntry, build_table
from shared.models import ProxyTarget

UPSTREAM = [
    (b"access-control-expose-headers", b"X-Total"),
    (b"strict-transport-security", b"max-age=5"),
    (b"content-type", b"application/json"),
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
        cors_expose=MCP_EXPOSED_HEADERS,
    )
    assert [v for n, v in out if n == b"strict-transport-security"] == [b"max-age=600"]
    assert [v for n, v in out if n == b"access-control-expose-headers"] == [
        b"X-Total, Mcp-Session-Id, MCP-Protocol-Version, WWW-Authenticate"
    ]


def test_without_a_policy_the_upstream_headers_pass_unchanged() -> None:
    out, _sse = client_response_headers(UPSTREAM, entry=_entry(), request_id=b"r", close=False)
    assert out[:3] == UPSTREAM
    assert out[3:] == [(b"x-request-id", b"r")]
