"""Request bodies are bounded while they stream, before any handler buffers them.

A declared Content-Length over the limit is answered 413 at once, without reading a byte of the body; a
body without one (chunked) is counted as it arrives and cut off with 413 the moment it passes the limit, so
memory stays bounded whatever a client sends. Unauthenticated endpoints (OAuth: /register, /token,
/authorize/consent, ...) get the small limit, the authenticated management API (/api/) a larger one. The
413 answer closes the connection (the unread rest of the body must not be parsed as a next request).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .answers import send_error


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
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0  # uvicorn's parser has refused a bad Content-Length before us
                if declared > limit:
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


async def _too_large(scope: Scope, send: Send, limit: int) -> None:
    message = f"the request body exceeds this endpoint's limit of {limit} bytes"
    await send_error(scope, send, 413, "invalid_request", message, [(b"connection", b"close")])
