"""Request-target normalisation (data_plane/protocol/request_target.py), fed targets: the forms accepted, the
RFC 3986 normal form, what is refused, the one prefix rule; and, with hypothesis, that every spelling of a
path gets the routing and auth decision of its normal form (the shell uses exactly these pure functions)."""

from __future__ import annotations

import posixpath
import re
import string
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_plane.auth.access_policy import ProxyAccessPolicy
from data_plane.auth.gate import Answer, AuthContext, Forward, ToAuthorizationServer, decide
from data_plane.auth.token_verifier import KeySet
from data_plane.protocol.request_target import (
    RequestTarget,
    TargetRejected,
    normalise_prefix,
    parse_request_target,
    under_prefix,
)
from data_plane.routing.route_table import ProxyEntry, build_table, select_upstream
from shared.models import ProxyAuthConfig, ProxyResource, ProxyTarget, Route, ScopeRule


def parse(target: bytes, method: bytes = b"GET", host: bytes = b"app.test") -> RequestTarget:
    parsed = parse_request_target(method, target, host)
    assert isinstance(parsed, RequestTarget), (target, parsed)
    return parsed


def refused(target: bytes, method: bytes = b"GET", host: bytes = b"app.test") -> str:
    parsed = parse_request_target(method, target, host)
    assert isinstance(parsed, TargetRejected), (target, parsed)
    return parsed.reason


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        (b"/mcp", b"/mcp"),
        (b"/", b"/"),
        (b"/%6dcp", b"/mcp"),
        (b"/%6Dcp", b"/mcp"),
        (b"/health/../mcp", b"/mcp"),
        (b"/health/%2e%2e/mcp", b"/mcp"),
        (b"/health/%2E./mcp", b"/mcp"),
        (b"/health/./x/.", b"/health/x/"),
        (b"/a/b/..", b"/a/"),
        (b"/../../etc", b"/etc"),
        (b"/..", b"/"),
        (b"//admin", b"/admin"),
        (b"/a//b///c/", b"/a/b/c/"),
        (b"/a//../b", b"/b"),
        (b"/x%3a%40", b"/x%3A%40"),  # reserved escapes stay escaped, hex upper-cased
        (b"/%7e%2D%5f", b"/~-_"),
        (b"/50%25", b"/50%25"),
        (b"/%252e%252e/x", b"/%252e%252e/x"),  # `%25` is the escape: never decoded into a new one
        (b"/a|b{c}", b"/a%7Cb%7Bc%7D"),
        ("/café".encode(), b"/caf%C3%A9"),
        (b"/.well-known/acme-challenge/tok", b"/.well-known/acme-challenge/tok"),
        (b"/...", b"/..."),
        (b"/a;v=1/b", b"/a;v=1/b"),
    ],
)
def test_normal_form(raw: bytes, normal: bytes) -> None:
    parsed = parse(raw)
    assert parsed.target == normal and parsed.path == normal.decode()
    assert not parsed.encoded_separator
    assert parse(normal).target == normal  # the normal form is a fixed point


def test_query_is_kept_byte_for_byte() -> None:
    parsed = parse(b"/a/../%62?x=%2e%2E&y=/../z")
    assert parsed.target == b"/b?x=%2e%2E&y=/../z" and parsed.path == "/b"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"/a%zz", "percent-escape"),
        (b"/a%2", "percent-escape"),
        (b"/a%", "percent-escape"),
        (b"/a%00b", "NUL"),
        (b"/a#frag", "fragment"),
        (b"/a?b#c", "fragment"),
        (b"/health/..;/mcp", "dot segment"),
        (b"/health/.;x/mcp", "dot segment"),
        (b"mcp", "origin-form"),
        (b"app.test:443", "origin-form"),
        (b"ftp://app.test/x", "http(s)"),
        (b"http://user@app.test/x", "userinfo"),
        (b"http:///x", "host"),
    ],
)
def test_refused(raw: bytes, reason: str) -> None:
    assert reason in refused(raw)


@pytest.mark.parametrize("raw", [b"/a%2fb", b"/a%2F..%2Fb", b"/a%5cb", b"/a\\b", b"/health%2f..%2fmcp"])
def test_encoded_separators_are_flagged_and_stay_one_segment(raw: bytes) -> None:
    parsed = parse(raw)
    assert parsed.encoded_separator
    assert b"%2f" not in parsed.target and b"%5c" not in parsed.target and b"\\" not in parsed.target
    assert parsed.path.count("/") == 1  # never split: one segment, and `..` inside it is no dot segment


def test_asterisk_only_for_options() -> None:
    assert parse(b"*", b"OPTIONS").target == b"*"
    assert "OPTIONS" in refused(b"*", b"GET")


def test_absolute_form_routes_by_its_authority_when_it_matches_host() -> None:
    parsed = parse(b"http://App.Test/x/../y?q=1", host=b"app.test")
    assert (parsed.target, parsed.path, parsed.host) == (b"/y?q=1", "/y", b"App.Test")
    assert parse(b"http://app.test:80/x", host=b"app.test").target == b"/x"
    assert parse(b"https://app.test", host=b"app.test:443").target == b"/"
    assert parse(b"HTTP://app.test?q", host=b"app.test").target == b"/?q"
    assert parse(b"http://app.test/x", host=b"").host == b"app.test"  # HTTP/1.0 without Host
    assert "Host" in refused(b"http://other.test/x", host=b"app.test")
    assert "Host" in refused(b"http://app.test:8080/x", host=b"app.test")


def test_prefixes_match_on_segment_boundaries() -> None:
    assert under_prefix("/health", "/health")
    assert under_prefix("/health/live", "/health")
    assert under_prefix("/health;v=1", "/health")
    assert not under_prefix("/healthz", "/health")
    assert not under_prefix("/health-private", "/health")
    assert not under_prefix("/health%2F..%2Fmcp", "/health")
    assert under_prefix("/api/x", "/api/") and not under_prefix("/api", "/api/")
    assert under_prefix("/anything", "/")
    assert normalise_prefix("/%6Dcp/./x/") == "/mcp/x/"
    assert normalise_prefix("/bad%zz") == "/bad%zz"  # matches nothing, as no request path has it


def test_configured_prefixes_are_normalised_like_request_paths() -> None:
    """A rule written in another spelling covers the paths it names (they arrive normalised)."""
    policy = ProxyAccessPolicy.compile(
        ProxyAuthConfig(
            hostname="a.test",
            public_paths=["/%68ealth"],
            scope_rules=[ScopeRule(path_prefix="/x/../%6dcp", scopes=["write"])],
        ),
        None,
    )
    assert policy.is_public(parse(b"/health/live").path)
    assert policy.scopes_for(parse(b"/mcp").path, "POST") == ("write",)
    table = build_table(
        1,
        [ProxyTarget(hostname="a.test", target_url="http://main:1")],
        [Route(id="r", path_pattern="/a/./b//", target_url="http://r:1")],
    )
    assert select_upstream(table.exact["a.test"], "GET", parse(b"/a/b/c").path)[1] == "r"


# ---- every spelling of a path gets its normal form's decision (hypothesis)

HOST = "app.test"
ISSUER = "https://auth.app.test"
SEGMENTS = ["health", "healthz", "health-private", "mcp", "admin", "api", "x", "a b", "é", "~u", "v1", ";p"]


def _table_entry() -> ProxyEntry:
    routes = [
        Route(id="api", path_pattern="/api", target_url="http://api:1", priority=900),
        Route(id="rx", path_pattern=r"^/admin(/|$)", match="regex", target_url="http://rx:1"),
        Route(id="health", path_pattern="/health/", target_url="http://h:1", methods=["GET"]),
    ]
    table = build_table(1, [ProxyTarget(hostname=HOST, target_url="http://main:1")], routes)
    return table.exact[HOST]


ENTRY = _table_entry()
POLICY = ProxyAccessPolicy.compile(
    ProxyAuthConfig(
        hostname=HOST,
        allowed_users=["alice"],
        public_paths=["/health"],
        scope_rules=[ScopeRule(path_prefix="/mcp", methods=["POST"], scopes=["mcp", "write"])],
    ),
    ProxyResource(hostname=HOST, path="/mcp"),
)
CONTEXT = AuthContext(ISSUER, KeySet({}), frozenset())


def decision(method: bytes, target: bytes) -> tuple[object, ...]:
    """What the data plane decides for one request from these pure pieces, as the shell composes them."""
    parsed = parse_request_target(method, target, HOST.encode())
    if isinstance(parsed, TargetRejected):
        return ("400",)
    upstream, route_id = select_upstream(ENTRY, method.decode(), parsed.path)
    gate = decide(
        POLICY,
        CONTEXT,
        scheme="https",
        method=method,
        path=parsed.path,
        headers=[(b"host", HOST.encode())],
        now=1_800_000_000,
    )
    if isinstance(gate, Answer):
        verdict: tuple[object, ...] = (gate.status, gate.body, gate.headers)
    elif isinstance(gate, ToAuthorizationServer):
        verdict = ("authorization server",)
    else:
        assert isinstance(gate, Forward)
        verdict = ("forward",)
    return (upstream.url, route_id, verdict, parsed.encoded_separator, POLICY.scopes_for(parsed.path, "POST"))


def _escape(char: str, upper: bool) -> str:
    return "".join(f"%{byte:02X}" if upper else f"%{byte:02x}" for byte in char.encode())


@st.composite
def spellings(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A path in plain spelling, and another spelling of it: unreserved characters escaped (either hex
    case), `.`/`..` detours and doubled slashes inserted."""
    parts = draw(st.lists(st.sampled_from(SEGMENTS), min_size=0, max_size=5))
    trailing = draw(st.booleans())
    plain = "/" + "/".join(parts) + ("/" if trailing and parts else "")
    out: list[str] = []
    for part in parts:
        detour = draw(st.sampled_from(["", "./", "zz/../", "zz/%2e%2E/", "/", "%2E/"]))
        escapable = string.ascii_letters + "-~"
        spelled = "".join(
            _escape(ch, draw(st.booleans())) if ch in escapable and draw(st.booleans()) else ch for ch in part
        )
        out.append(detour + spelled)
    variant = "/" + "/".join(out) + ("/" if trailing and parts else "")
    encode = lambda text: text.encode("utf-8")  # noqa: E731
    return encode(plain), encode(variant)


@settings(max_examples=400, deadline=None)
@given(spellings(), st.sampled_from([b"GET", b"POST", b"DELETE"]), st.sampled_from(["", "?q=%2e&r=/../"]))
def test_every_spelling_gets_the_decision_of_its_normal_form(
    pair: tuple[bytes, bytes], method: bytes, query: str
) -> None:
    plain, variant = pair
    first = parse(plain + query.encode())
    second = parse(variant + query.encode())
    assert first.target == second.target, (plain, variant)
    assert decision(method, plain + query.encode()) == decision(method, variant + query.encode())


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="/.%2eEfF6dDa;~_-x?#\\", min_size=1, max_size=24))
def test_normalising_keeps_the_meaning_and_is_idempotent(tail: str) -> None:
    """Whatever the bytes, the normal form is a fixed point and means what the client's path meant: the same
    decoded path once dot segments are resolved and slashes merged (an upstream's reading of it)."""
    raw = ("/" + tail).encode()
    parsed = parse_request_target(b"GET", raw, b"app.test")
    if isinstance(parsed, TargetRejected):
        return
    again = parse(parsed.target)
    assert again.target == parsed.target
    path = raw.split(b"?", 1)[0]
    if parsed.encoded_separator:
        return  # meaning depends on whether the upstream splits %2F: refused unless the proxy opts in

    def meaning(p: bytes) -> bytes:
        decoded = unquote_to_bytes(p).decode("latin-1")
        resolved = posixpath.normpath(re.sub("/+", "/", decoded))
        return resolved.lstrip("/").encode("latin-1")

    assert meaning(parsed.path.encode()) == meaning(path)
