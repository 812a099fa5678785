"""Every use of h11's private API, in one place (h11 parses what clients send; see DESIGN.md).

h11 is bounded below its next minor release in pyproject.toml, and tests/data_plane/test_h11_compat.py
exercises each function here against the installed h11: when a new h11 moves one of these internals the
test fails by name, before the data plane misbehaves. Anything else in data_plane/ uses h11's public API.

- `header_pairs`: h11's Headers is a Sequence whose iteration calls a Python __getitem__ per header; a request
  passes through several header loops, so the plain list is built once from its backing list.
- `end_request_without_body`: a bodiless request has ended with its head. What h11's zero-length body reader
  would yield from next_event, applied to its state machine directly (one parse call less per request).
"""

from __future__ import annotations

from collections.abc import Sequence

import h11

Headers = list[tuple[bytes, bytes]]

_END_OF_MESSAGE = h11.EndOfMessage()


def header_pairs(headers: Sequence[tuple[bytes, bytes]]) -> Headers:
    """An h11 event's headers as a plain list of (lower-case name, value)."""
    full_items = getattr(headers, "_full_items", None)
    if full_items is None:
        return list(headers)
    return [(name, value) for _raw, name, value in full_items]


def end_request_without_body(conn: h11.Connection) -> None:
    """Tell a server-side connection that the request it just returned (with no body) has ended."""
    role = conn.their_role
    try:
        conn._process_event(role, _END_OF_MESSAGE)
    except BaseException:
        conn._process_error(role)
        raise


def awaiting_protocol_switch(conn: h11.Connection) -> bool:
    """The client's whole request was read and it proposed a protocol switch (an Upgrade without a body)."""
    return conn.their_state is h11.MIGHT_SWITCH_PROTOCOL  # type: ignore[attr-defined]
