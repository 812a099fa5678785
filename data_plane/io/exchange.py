"""What one client exchange carries between the connection, the HTTP relay and the auth gate: its record
(for the request log and metrics), its request id, and the two ways a client can end it early."""

from __future__ import annotations

import itertools
import secrets
import time

from data_plane.request_log import RequestLogEntry


class RequestIds:
    """X-Request-Id values: 64 random bits chosen once per process, then a counter.

    The counter makes every id of one process distinct (an id built from a connection object's address
    repeats as soon as CPython reuses the memory); the random prefix keeps replicas and `--workers`
    processes apart (two of them share a prefix with probability about n^2 / 2^65). Cheaper per request
    than drawing fresh random bits, which would cost a syscall each."""

    __slots__ = ("_counter", "_prefix")

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):08x}"


class ClientAborted(Exception):
    """The client went away or broke protocol mid-request; nothing more can be sent to it."""


class ClientBadBody(Exception):
    """The request body's framing is invalid (e.g. a bad chunk size): 400, then close."""


class ExchangeRecord:
    """What the request log and metrics need about one exchange, filled in as it goes."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "client_id",
        "finished",
        "host",
        "mcp_method",
        "mcp_tool",
        "method",
        "path",
        "request_id",
        "route_id",
        "started",
        "status",
        "upstream",
        "user",
    )

    def __init__(self, started: float, host: str, method: str, path: str, request_id: str) -> None:
        self.started = started
        self.host = host
        self.method = method
        self.path = path
        self.request_id = request_id
        self.status = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.upstream = ""
        self.route_id: str | None = None
        self.user = ""  # the verified token's login (or subject) on a protected proxy
        self.client_id = ""  # and its OAuth client
        self.mcp_method = ""  # the Mcp-Method / Mcp-Name headers (request_log.RequestLogEntry says how)
        self.mcp_tool = ""
        self.finished = False

    def log_entry(self, client_ip: str) -> RequestLogEntry:
        return RequestLogEntry(
            time=time.time(),
            client_ip=client_ip,
            host=self.host,
            method=self.method,
            path=self.path,
            status=self.status,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            duration_seconds=time.monotonic() - self.started,
            upstream=self.upstream,
            route_id=self.route_id or "",
            request_id=self.request_id,
            user=self.user,
            client_id=self.client_id,
            mcp_method=self.mcp_method,
            mcp_tool=self.mcp_tool,
        )
