"""What the store needs to know about the API request a configuration write belongs to.

An ASGI middleware opens one `RequestContext` per HTTP request and keeps it in a context variable; on
operations that honour it, an API dependency stores the client's `If-Match` there (api/etag.py).
`Store.transact` reads it to check the precondition inside the write's transaction and to hand back the
written object's new ETag, which the middleware adds to the response. Writes made outside a request
(controllers, workers) see no context: no precondition.

The context is a mutable object shared by reference, so values set by a dependency running in a copied
context (a threadpool, a BaseHTTPMiddleware task) are still seen by the middleware.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .edge.client_address import client_ip


@dataclass(slots=True)
class RequestContext:
    client_address: str
    method: str
    path: str
    # The raw If-Match value of an operation that honours it (None: no precondition).
    if_match: str | None = None
    # Set by the store once the request's first write about a single object committed; later writes of
    # the same request (follow-ups such as a certificate request) are not checked against If-Match.
    subject_committed: bool = False
    # The new ETag of the object the write was about (None after a delete).
    etag: str | None = None


_current: ContextVar[RequestContext | None] = ContextVar("mhp_request_context", default=None)


def current() -> RequestContext | None:
    return _current.get()


class RequestContextMiddleware:
    """Opens the context for every request and adds the ETag a handler or a write produced."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        runtime = getattr(scope["app"].state, "runtime", None)
        trusted = runtime.settings.trusted_proxy_networks if runtime is not None else ()
        context = RequestContext(
            client_address=client_ip(scope, trusted), method=str(scope["method"]), path=str(scope["path"])
        )
        token = _current.set(context)

        async def send_with_etag(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if context.etag is not None and 200 <= status < 300:
                    headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"etag"]
                    headers.append((b"etag", context.etag.encode("ascii")))
                    message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_etag)
        finally:
            _current.reset(token)
