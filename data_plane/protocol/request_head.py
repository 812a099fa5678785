"""Strict checks on a raw request head, before h11 sees it.

h11 is deliberately lenient on input (it unfolds obs-fold, accepts bare LF, passes control bytes in values and
merges duplicate Content-Length), which is right for a client library and wrong for an edge proxy: any shape
that two HTTP parsers might frame differently is a smuggling vector. This module finds the end of the head and
rejects those shapes so the connection can answer 400 and close before anything reaches an upstream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
# Request line, then header lines ending in CRLF: `token:` + a value of visible bytes, SP, HT or obs-text.
# A line starting with whitespace (obs-fold), a bare LF or CR, or any other control byte fails the match.
_HEAD = re.compile(
    rb"[A-Z]+ [\x21-\x7e\x80-\xff]+ HTTP/1\.[01]\r\n(?:" + _TOKEN + rb":[\t\x20-\x7e\x80-\xff]*\r\n)*\r\n"
)
_FRAMING = re.compile(rb"\r\n(content-length|transfer-encoding)[ \t]*:[ \t]*([^\r]*)", re.IGNORECASE)
_DIGITS = re.compile(rb"[0-9]{1,18}")


@dataclass(frozen=True, slots=True)
class HeadRejected:
    status: int
    reason: str


def find_head_end(buffer: bytes) -> int:
    """Index just past the blank line ending the head, -1 if not there yet, -2 on a bare-LF terminator."""
    end = buffer.find(b"\r\n\r\n")
    if end >= 0:
        return end + 4
    # A head ending in bare LFs would wait forever for CRLFCRLF; spot it so it is refused instead.
    if b"\n\n" in buffer or b"\n\r\n" in buffer:
        return -2
    return -1


def check_head(head: bytes) -> HeadRejected | None:
    """None when the head is well-formed and unambiguously framed, else why it is refused."""
    if _HEAD.fullmatch(head) is None:
        return HeadRejected(400, "malformed request head")
    content_lengths = 0
    transfer_encoding = False
    for match in _FRAMING.finditer(head):
        if match.group(1).lower() == b"content-length":
            content_lengths += 1
            if _DIGITS.fullmatch(match.group(2).rstrip(b" \t")) is None:
                return HeadRejected(400, "invalid Content-Length")
        else:
            if transfer_encoding:
                return HeadRejected(400, "duplicate Transfer-Encoding")
            transfer_encoding = True
            if match.group(2).rstrip(b" \t").lower() != b"chunked":
                return HeadRejected(400, "unsupported Transfer-Encoding (only chunked)")
    if content_lengths > 1:
        return HeadRejected(400, "duplicate Content-Length")
    if content_lengths and transfer_encoding:
        return HeadRejected(400, "both Content-Length and Transfer-Encoding")
    return None
