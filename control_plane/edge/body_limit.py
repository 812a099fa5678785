"""Request bodies are bounded while they stream, before any handler buffers them.

A declared Content-Length over the limit is answered 413 without handing a byte of the body to the app; a
body without one (chunked) is counted as it arrives and cut off with 413 the moment it passes the limit, so
memory stays bounded whatever a client sends. Before a 413 for a declared length the body is read and
discarded (nginx's "lingering close"), up to DRAIN_MAX_BYTES and DRAIN_SECONDS: most clients (httpx,
requests, browsers' fetch) write the whole body before they read, and a server that closes with unread data
makes the kernel send a reset that destroys the 413 on its way. A client that sent `Expect: 100-continue`
has not sent the body and is answered at once; a bigger declared body is answered at once too.
Unauthenticated endpoints (OAuth: /register, /token, /authorize/consent, ...) get the small limit, the
authenticated management API (/api/) a larger one. The 413 answer closes the connection (an unread rest of
the body must not be parsed as a next request).
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .answers import send_error

DRAIN_MAX_BYTES = 16 * 1024 * 1024
DRAIN_SECONDS = 5.0


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    def __init__(self, app: ASGIApp, *, public_max_bytes: int, api_max_bytes: int) -> None:
        self.app = app
        self.public_max_bytes = public_max_bytes
        self.api_max_bytes = api_max_bytes

    def limit_for(self, path: str) -> int:
        return self.api_max_bytes if path.startswith("/api/") else self.public_max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = 0
        expects_continue = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0  # uvicorn's parser has refused a bad Content-Length before us
            elif name == b"expect":
                expects_continue = value.lower() == b"100-continue"
        if declared > limit:
            if not expects_continue and declared <= DRAIN_MAX_BYTES:
                await _discard_body(receive)
            await _too_large(scope, send, limit)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _too_large(scope, send, limit)


async def _discard_body(receive: Receive) -> None:
    """Read the request body and drop it (bounded by the declared length's cap and a deadline)."""

    async def drain() -> None:
        while True:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                return

    try:
        await asyncio.wait_for(drain(), DRAIN_SECONDS)
    except TimeoutError:
        pass


async def _too_large(scope: Scope, send: Send, limit: int) -> None:
    message = f"the request body exceeds this endpoint's limit of {limit} bytes"
    await send_error(scope, send, 413, "invalid_request", message, [(b"connection", b"close")])
