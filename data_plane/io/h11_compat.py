"""Every use of h11's private API, in one place (h11 parses what clients send; see DESIGN.md).

h11 is bounded below its next minor release in pyproject.toml, and tests/data_plane/test_h11_compat.py
exercises each function here against the installed h11: when a new h11 moves one of these internals the
test fails by name, before the data plane misbehaves. Anything else in data_plane/ uses h11's public API.

- `header_pairs`: h11's Headers is a Sequence whose iteration calls a Python __getitem__ per header; a request
  passes through several header loops, so the plain list is built once from its backing list.
- `end_request_without_body`: a bodiless request has ended with its head. What h11's zero-length body reader
  would yield from next_event, applied to its state machine directly (one parse call less per request).
- `trust_checked_head`: the head waiting in a fresh parser's buffer already passed protocol.request_head's
  strict check, which accepts only header lines h11's header regex also accepts (`token:` then visible bytes,
  SP, HT and obs-text; no fold, no bare CR or LF, no NUL), and the caller found where it ends: h11's reader
  for that head then takes exactly that many bytes (no second search for the blank line), splits the lines at
  CRLF, and each header line at its colon, stripping SP/HT as the regex's groups would, instead of matching
  the line a second time (a bearer token is ~1 KB: about 4 us of regex per request). The request line still
  goes through h11's regex (the strict check allows obs-text in the target, h11 does not), and everything
  after the header lines (Request's normalisation: Content-Length, Transfer-Encoding, Host) is h11's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import h11
from h11._readers import request_line_re
from h11._receivebuffer import ReceiveBuffer
from h11._util import validate

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


def trust_checked_head(conn: h11.Connection, head_length: int) -> None:
    """The first `head_length` bytes in `conn`'s buffer are a complete head that passed
    protocol.request_head.check_head: read it without h11's search for its end and per-header-line regex
    (see the module docstring). Only a parser still waiting for a request head."""
    if conn.their_state is h11.IDLE:
        conn._reader = partial(_read_checked_request, head_length)


def _read_checked_request(head_length: int, buffer: ReceiveBuffer) -> h11.Request | None:
    """h11's maybe_read_from_IDLE_client for a head of known length that check_head accepted (so its lines
    end in CRLF and nothing else, and it ends in the blank line)."""
    if len(buffer) < head_length:
        return None
    head = buffer._extract(head_length)
    lines = head[:-4].split(b"\r\n")
    request_line = bytes(lines[0])
    matches = validate(request_line_re, request_line, "illegal request line: {!r}", request_line)
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((bytes(name), bytes(value.strip(b" \t"))))
    return h11.Request(headers=headers, _parsed=True, **matches)
