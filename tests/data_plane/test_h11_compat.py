"""io/h11_compat.py against the installed h11: each private hook must still do what the data plane relies on.
When an h11 release moves one of these internals, a test here fails by name (and pyproject.toml bounds h11
below its next minor release, so the lock cannot take it unnoticed)."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version

import h11

from data_plane.io import h11_compat
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
