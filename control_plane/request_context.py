"""What the store needs to know about the API request a configuration write belongs to.

An ASGI middleware opens one `RequestContext` per HTTP request and keeps it in a context variable; the
API's dependencies fill in who is calling (api/deps.py) and, on operations that honour it, the client's
`If-Match` (api/etag.py). `Store.transact` reads it to check the precondition inside the transaction, to
record the change-audit entry in the same MULTI/EXEC (management-API requests only), and to hand back the
written object's new ETag, which the middleware adds to the response. The OAuth audit reads the client
address from it, and the middleware records requests a rate limit refused (it runs outside the rate
limit). Writes made outside a request (controllers, workers) see no context: no precondition, no audit.

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
    # A management-API request (under /api/): its configuration writes are change-audited.
    api: bool
    # Who is calling: an API token's name, "admin" (ADMIN_TOKEN) or "oauth:<login>"; None until known.
    actor: str | None = None
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
    """Opens the context for every request, adds the ETag a handler or a write produced, audits 429s."""

    def __init__(self, app: ASGIApp, *, api_prefix: str = "/api/") -> None:
        self.app = app
        self.api_prefix = api_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        runtime = getattr(scope["app"].state, "runtime", None)
        trusted = runtime.settings.trusted_proxy_networks if runtime is not None else ()
        path = str(scope["path"])
        context = RequestContext(
            client_address=client_ip(scope, trusted),
            method=str(scope["method"]),
            path=path,
            api=path.startswith(self.api_prefix),
        )
        token = _current.set(context)
        status = 0

        async def send_with_etag(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if context.etag is not None and 200 <= status < 300:
                    headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"etag"]
                    headers.append((b"etag", context.etag.encode("ascii")))
                    message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_etag)
            audit = getattr(runtime, "audit", None)
            if status == 429 and audit is not None:
                await audit.oauth.rate_limited(path, context.client_address)
        finally:
            _current.reset(token)
