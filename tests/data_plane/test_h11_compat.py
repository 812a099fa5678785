"""io/h11_compat.py against the installed h11: each private hook must still do what the data plane relies on.
When an h11 release moves one of these internals, a test here fails by name (and pyproject.toml bounds h11
below its next minor release, so the lock cannot take it unnoticed)."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_plane.io import h11_compat
from data_plane.protocol.request_head import check_head, find_head_end
from tests.conftest import REPO_ROOT


def _server_with(data: bytes) -> tuple[h11.Connection, h11.Request]:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    event = conn.next_event()
    assert type(event) is h11.Request
    return conn, event


def test_the_locked_h11_is_inside_the_bound_the_compat_module_was_written_for() -> None:
    with (REPO_ROOT / "pyproject.toml").open("rb") as handle:
        dependencies = tomllib.load(handle)["project"]["dependencies"]
    spec = next(d for d in dependencies if d.startswith("h11"))
    upper = re.search(r"<\s*([0-9.]+)", spec)
    assert upper is not None, f"h11 needs an upper bound in pyproject.toml ({spec})"
    installed = tuple(int(part) for part in version("h11").split(".")[:2])
    assert installed < tuple(int(part) for part in upper.group(1).split(".")[:2])


def test_header_pairs_reads_h11s_backing_list() -> None:
    _conn, request = _server_with(b"GET / HTTP/1.1\r\nHost: a\r\nX-Mixed-Case: V\r\n\r\n")
    # The fast path, not the fallback: h11 still keeps (raw name, name, value) triples there.
    assert [len(item) for item in request.headers._full_items] == [3, 3]
    assert h11_compat.header_pairs(request.headers) == [(b"host", b"a"), (b"x-mixed-case", b"V")]
    assert h11_compat.header_pairs([(b"a", b"b")]) == [(b"a", b"b")]


def test_end_request_without_body_ends_the_cycle_like_next_event_would() -> None:
    conn, _request = _server_with(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n")
    h11_compat.end_request_without_body(conn)
    assert conn.their_state is h11.DONE
    # What came after the head is still there for the next request's parser.
    assert conn.trailing_data[0].startswith(b"GET /next ")
    # And it is exactly what h11's own reader would have done.
    other, _ = _server_with(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert type(other.next_event()) is h11.EndOfMessage
    assert other.their_state is conn.their_state


def test_awaiting_protocol_switch_after_an_upgrade_request() -> None:
    conn, _request = _server_with(
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    )
    h11_compat.end_request_without_body(conn)
    assert h11_compat.awaiting_protocol_switch(conn)
    plain, _ = _server_with(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    h11_compat.end_request_without_body(plain)
    assert not h11_compat.awaiting_protocol_switch(plain)


def _parse(head: bytes, *, trusted: bool) -> tuple[str, object]:
    """What a fresh server-side parser makes of `head`: ("request", its fields) or ("error", the class)."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head)
    if trusted:
        h11_compat.trust_checked_head(conn, find_head_end(head))
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError as exc:
        return "error", (type(exc), exc.error_status_hint)
    assert type(event) is h11.Request
    fields = (event.method, event.target, event.http_version, list(event.headers._full_items))
    return "request", (fields, conn.their_state, conn.trailing_data)


_TOKEN_BYTES = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_VALUE_BYTES = bytes([9, *range(0x20, 0x7F), *range(0x80, 0x100)])
_TARGET_BYTES = bytes([*range(0x21, 0x7F), 0x80, 0xC3, 0xFF])

HEADS = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost:a\r\nAuthorization:   Bearer abc.def.ghi \t \r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Blank: \t \r\nX-Inner: a \t b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Colons: a:b::c\r\nX-Obs: caf\xc3\xa9\r\n\r\n",
    b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",  # no Host: h11 refuses it
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",  # two Hosts: h11 refuses it
    b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n",  # obs-text in the target: h11 refuses it
]


@pytest.mark.parametrize("head", HEADS)
def test_a_checked_head_reads_as_h11_reads_it(head: bytes) -> None:
    assert check_head(head[: find_head_end(head)]) is None
    assert _parse(head, trusted=True) == _parse(head, trusted=False)


@st.composite
def _checked_heads(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from([b"GET", b"POST", b"OPTIONS", b"DELETE", b"PATCH"]))
    target = b"/" + draw(
        st.binary(max_size=40).map(lambda b: bytes(_TARGET_BYTES[x % len(_TARGET_BYTES)] for x in b))
    )
    version = draw(st.sampled_from([b"1.0", b"1.1"]))
    lines = [b"%s %s HTTP/%s" % (method, target, version)]
    names = st.binary(min_size=1, max_size=12).map(
        lambda b: bytes(_TOKEN_BYTES[x % len(_TOKEN_BYTES)] for x in b)
    )
    values = st.binary(max_size=300).map(lambda b: bytes(_VALUE_BYTES[x % len(_VALUE_BYTES)] for x in b))
    fixed = st.sampled_from([b"Host", b"host", b"Content-Length", b"Authorization", b"Connection"])
    for name, value in draw(st.lists(st.tuples(st.one_of(fixed, names), values), max_size=8)):
        lines.append(name + b":" + value)
    return b"\r\n".join(lines) + b"\r\n\r\n"


@settings(max_examples=1500, deadline=None)
@given(_checked_heads())
def test_generated_checked_heads_read_as_h11_reads_them(head: bytes) -> None:
    """Every head the strict check lets through: the same request (or the same refusal) either way."""
    if check_head(head) is not None:
        return
    assert _parse(head, trusted=True) == _parse(head, trusted=False)


def test_trust_checked_head_leaves_a_parser_past_its_head_alone() -> None:
    conn, _request = _server_with(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok")
    h11_compat.trust_checked_head(conn, 4)
    assert conn.next_event() == h11.Data(data=b"ok")
