"""An upstream's response, parsed by llhttp (httptools) behind a sans-IO seam: bytes in, events out.

h11 costs tens of microseconds per response in pure Python; llhttp parses in C. Its strict mode already
refuses what matters most (bare CR or LF, obs-fold, control bytes in values, duplicate or malformed
Content-Length, Content-Length with Transfer-Encoding, bad chunk sizes); this module adds the rules h11 has
and llhttp lacks, so the parser is never more lenient than h11 (tests/data_plane/test_response_parser.py
feeds both the same bytes): only `Transfer-Encoding: chunked` (once), HTTP/1.0 or 1.1, a reason phrase of
visible bytes, a bounded head, trailing whitespace stripped from values, nothing before the status line.

Events, in order: `Informational` (1xx; a 101 ends the HTTP part and `switched_rest` holds what followed
it), then one `ResponseHead`, `BodyData` pieces and `ResponseEnd` (NamedTuples: immutable, and cheap to build
per response and per body piece). llhttp cannot be told that the request was HEAD, so for HEAD the parser
stops at the final head itself. Bytes after the end of the response (not a stray CRLF, which RFC 9112 lets a
recipient ignore) set `trailing`: that connection must not be reused. One parser serves a keep-alive
connection's responses in turn (`next_response`).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import NamedTuple

import httptools

Headers = list[tuple[bytes, bytes]]

_REASON = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_OWS = b" \t"


class UpstreamProtocolError(Exception):
    """The upstream's bytes are not a response we accept; the connection is unusable."""


class Informational(NamedTuple):
    status: int
    reason: bytes
    headers: Headers


class Framing(enum.Enum):
    LENGTH = "length"
    CHUNKED = "chunked"
    UNTIL_CLOSE = "until close"
    NONE = "none"  # HEAD, 204, 304: the head is the whole response


class ResponseHead(NamedTuple):
    status: int
    reason: bytes
    headers: Headers  # lower-case names, values without surrounding whitespace, in arrival order
    http_version: bytes
    keep_alive: bool  # HTTP/1.1 without `Connection: close` (h11's rule)
    framing: Framing
    content_length: int  # -1 unless framing is LENGTH


class BodyData(NamedTuple):
    data: bytes


@dataclass(frozen=True, slots=True)
class ResponseEnd:
    pass


RESPONSE_END = ResponseEnd()
ResponseEvent = Informational | ResponseHead | BodyData | ResponseEnd


class ParseState(enum.Enum):
    HEAD = "head"  # before the final response head (1xx heads may come and go)
    BODY = "body"
    DONE = "done"
    SWITCHED = "switched"  # a 101: what follows is another protocol
    FAILED = "failed"


class _Stop(Exception):
    """Raised from a callback to stop llhttp (the response is complete as far as we are concerned)."""


class ResponseParser:
    """One response (and the 1xx before it) to one request sent with `request_method`."""

    __slots__ = (
        "_head_bytes",
        "_head_fed",
        "_head_size",
        "_headers",
        "_heads_seen",
        "_llhttp",
        "_llhttp_clean",
        "_max_head_bytes",
        "_method",
        "_reason",
        "_started",
        "events",
        "framing",
        "state",
        "switched_rest",
        "trailing",
    )

    def __init__(self, request_method: bytes, *, max_head_bytes: int = 65536) -> None:
        self._max_head_bytes = max_head_bytes
        self._llhttp = httptools.HttpResponseParser(self)
        self._llhttp_clean = True
        self._reset(request_method)

    def next_response(self, request_method: bytes) -> None:
        """Parse the response to the next request on the same connection (after a `reusable` one). llhttp is
        kept when it ended the last response itself, so it stands at a message boundary; otherwise (it was
        stopped for HEAD, or failed) a fresh one takes over."""
        if not self._llhttp_clean or self.state is not ParseState.DONE:
            self._llhttp = httptools.HttpResponseParser(self)
            self._llhttp_clean = True
        self._reset(request_method)

    def _reset(self, request_method: bytes) -> None:
        self._method = request_method
        self._headers: Headers = []
        self._reason = b""
        self._head_size = 0
        # Only for HEAD: the bytes of the heads, to find where the final one ends (see _end_head_only).
        self._head_bytes = bytearray() if request_method == b"HEAD" else None
        self._head_fed = 0
        self._heads_seen = 0
        self._started = False
        # What the llhttp callbacks of the current receive_data call produced.
        self.events: list[ResponseEvent] = []
        self.state = ParseState.HEAD
        self.framing = Framing.NONE
        self.switched_rest = b""
        self.trailing = False

    # Feeding -------------------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[ResponseEvent]:
        """Parse `data`; returns the events it completed. Raises UpstreamProtocolError (then `state` is
        FAILED)."""
        events: list[ResponseEvent] = []
        self.events = events
        state = self.state
        if state is ParseState.SWITCHED:
            self.switched_rest += data  # another protocol's bytes, for whoever takes over
            return []
        if state is ParseState.DONE:
            if data.strip(b"\r\n"):
                self.trailing = True
            return []
        if state is ParseState.FAILED:
            raise UpstreamProtocolError("response already rejected")
        if not self._started:
            if not data:
                return []
            self._started = True
            if not data.startswith(b"HTTP/"[: len(data)]):
                self._fail("response does not start with a status line")
        if state is ParseState.HEAD:
            self._head_fed += len(data)
            if self._head_bytes is not None:
                self._head_bytes += data
        try:
            self._llhttp.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            offset = int(upgrade.args[0])
            self.switched_rest = data[offset:]
            self._llhttp_clean = False  # another protocol follows; never reused for HTTP
        except _Stop:  # pragma: no cover - httptools wraps callback errors; kept for clarity
            self._llhttp_clean = False
        except httptools.HttpParserError as exc:
            self._llhttp_clean = False
            if self.state is ParseState.DONE:
                # llhttp was stopped on purpose (HEAD), or met bytes after the end.
                pass
            elif self.state is not ParseState.FAILED:
                self.state = ParseState.FAILED
                raise UpstreamProtocolError(_reason_of(exc)) from None
            else:
                raise UpstreamProtocolError(str(exc.__context__ or exc)) from None
        if self.state is ParseState.HEAD and self._head_fed > self._max_head_bytes:
            # Counted while the head is incomplete: a head that never ends is refused at the bound.
            self._fail(f"response head larger than {self._max_head_bytes} bytes")
        return events

    def receive_eof(self) -> list[ResponseEvent]:
        """The upstream closed its side. Ends a close-delimited body; anywhere else mid-response it is an
        error (UpstreamProtocolError)."""
        if self.state is ParseState.BODY and self.framing is Framing.UNTIL_CLOSE:
            self.state = ParseState.DONE
            return [RESPONSE_END]
        if self.state is ParseState.DONE or self.state is ParseState.SWITCHED:
            return []
        where = "before a complete response head" if self.state is ParseState.HEAD else "mid-body"
        self.state = ParseState.FAILED
        raise UpstreamProtocolError(f"connection closed {where}")

    @property
    def reusable(self) -> bool:
        """The response ended cleanly with nothing after it (the caller also checks keep-alive)."""
        return self.state is ParseState.DONE and not self.trailing

    def _fail(self, reason: str) -> None:
        self.state = ParseState.FAILED
        raise UpstreamProtocolError(reason)

    # llhttp callbacks ----------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.state is ParseState.DONE:
            self.trailing = True
            raise _Stop
        self._headers = []
        self._reason = b""
        self._head_size = 17  # "HTTP/1.1 200 " + CRLF + the blank line

    def on_status(self, reason: bytes) -> None:
        self._reason += reason
        self._head_size += len(reason)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.state is ParseState.HEAD:  # afterwards: chunked trailers, which are not relayed
            self._headers.append((name.lower(), value.rstrip(_OWS)))
            self._head_size += len(name) + len(value) + 3

    def on_headers_complete(self) -> None:
        if self._head_size > self._max_head_bytes:
            # Also when it arrived in one read (h11 bounds only what it buffers while incomplete).
            self._reject(f"response head larger than {self._max_head_bytes} bytes")
        parser = self._llhttp
        status = parser.get_status_code()
        reason = self._reason
        if status < 100 or _REASON.fullmatch(reason) is None:
            self._reject(f"invalid status line ({status} {reason[:40]!r})")
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            self._reject(f"unsupported HTTP version {version}")
        headers = self._headers
        self._heads_seen += 1
        # h11 validates the framing headers of every head, interim ones included.
        content_length = -1
        chunked = False
        connection_close = False
        for name, value in headers:
            if name == b"transfer-encoding":
                if chunked or value.lower() != b"chunked":
                    self._reject("unsupported Transfer-Encoding (only one 'chunked')")
                chunked = True
            elif name == b"content-length":
                content_length = int(value)  # llhttp accepted digits only, once
            elif name == b"connection":
                connection_close = connection_close or any(
                    token.strip().lower() == b"close" for token in value.split(b",")
                )
        if status < 200:
            if status == 101:
                self.state = ParseState.SWITCHED
            self.events.append(Informational(status, reason, headers))
            return
        if self._method == b"HEAD" or status in (204, 304):
            framing, content_length = Framing.NONE, -1
        elif chunked:
            framing = Framing.CHUNKED
        elif content_length >= 0:
            framing = Framing.LENGTH
        else:
            framing = Framing.UNTIL_CLOSE
        self.framing = framing
        http_version = version.encode()
        keep_alive = http_version == b"1.1" and not connection_close and framing is not Framing.UNTIL_CLOSE
        self.events.append(
            ResponseHead(status, reason, headers, http_version, keep_alive, framing, content_length)
        )
        self.state = ParseState.BODY
        if self._method == b"HEAD":
            self._end_head_only()

    def on_body(self, data: bytes) -> None:
        self.events.append(BodyData(data))

    def on_message_complete(self) -> None:
        if self.state is ParseState.BODY:
            self.state = ParseState.DONE
            self.events.append(RESPONSE_END)
        # A 1xx (not 101) completes as a message of its own; the final response follows.

    def _reject(self, reason: str) -> None:
        self.state = ParseState.FAILED
        raise UpstreamProtocolError(reason)

    def _end_head_only(self) -> None:
        """A response to HEAD ends with its head; llhttp would wait for a Content-Length body."""
        self.state = ParseState.DONE
        self.events.append(RESPONSE_END)
        buffer = self._head_bytes
        assert buffer is not None
        end = 0
        for _ in range(self._heads_seen):
            found = buffer.find(b"\r\n\r\n", end)
            end = found + 4
        if bytes(buffer[end:]).strip(b"\r\n"):
            self.trailing = True
        self._head_bytes = None
        raise _Stop


def _reason_of(exc: httptools.HttpParserError) -> str:
    cause = exc.__context__
    if isinstance(cause, UpstreamProtocolError):
        return str(cause)
    return str(exc) or type(exc).__name__
