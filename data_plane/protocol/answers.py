"""The data plane's own answers, as bytes (sans-IO): every status it sends itself is built here.

Plain-text errors and notices (`text_answer`: 400 bad target, 404 unknown host, 413, 421, 502/503/504, the
308 redirect...), answers composed by the auth gate (`composed_answer`: PRM documents, 401/403 JSON, CORS
preflights) and the last-resort answer to input we cannot parse at all (`closing_answer`: written whatever
state the parser is in, then the connection closes). Each carries X-Request-Id when the request got one, and
`Connection: close` when the connection ends after it; a response to HEAD has the head only.
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus

Headers = list[tuple[bytes, bytes]]

_TEXT = (b"content-type", b"text/plain; charset=utf-8")


def reason_phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


# RFC 9110's name for 413 (Python 3.11 still says "Request Entity Too Large").
_REASONS = {status: reason_phrase(status) for status in range(100, 600)} | {413: b"Content Too Large"}
_STATUS_LINES = {status: b"HTTP/1.1 %d %s\r\n" % (status, reason) for status, reason in _REASONS.items()}


def status_line(status: int, reason: bytes | None = None) -> bytes:
    if reason is None:
        line = _STATUS_LINES.get(status)
        if line is not None:
            return line
        reason = b""
    return b"HTTP/1.1 %d %s\r\n" % (status, reason)


def _head(status: int, headers: Sequence[tuple[bytes, bytes]]) -> bytes:
    parts = [status_line(status)]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def text_answer(
    status: int,
    message: str,
    request_id: bytes,
    *,
    close: bool,
    head_only: bool = False,
    extra: Sequence[tuple[bytes, bytes]] = (),
) -> bytes:
    """A plain-text answer: `message` and a newline as the body."""
    body = (message + "\n").encode("utf-8", "replace")
    headers: Headers = [_TEXT, (b"content-length", b"%d" % len(body)), (b"x-request-id", request_id)]
    headers.extend(extra)
    if close:
        headers.append((b"connection", b"close"))
    head = _head(status, headers)
    return head if head_only else head + body


def composed_answer(
    status: int,
    headers: Sequence[tuple[bytes, bytes]],
    body: bytes,
    request_id: bytes,
    *,
    close: bool,
    head_only: bool = False,
) -> bytes:
    """An answer whose content headers someone else chose (the auth gate's JSON); framing is added here."""
    out: Headers = [*headers, (b"x-request-id", request_id)]
    if status != 204:
        out.append((b"content-length", b"%d" % len(body)))
    if close:
        out.append((b"connection", b"close"))
    head = _head(status, out)
    return head if head_only or not body else head + body


def closing_answer(status: int, message: str) -> bytes:
    """For input that never became a request (malformed head, limits, overload): no request id, close."""
    body = (message + "\n").encode("utf-8", "replace")
    return (
        _head(
            status,
            [_TEXT, (b"content-length", b"%d" % len(body)), (b"connection", b"close")],
        )
        + body
    )


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
