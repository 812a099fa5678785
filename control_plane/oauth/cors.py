"""CORS for the endpoints browser-based OAuth clients call cross-origin: metadata, JWKS, registration,
token, introspection, revocation and device flow. Answers preflights itself; never allows credentials
(these endpoints take no cookies), so `*` is safe. Other paths (/authorize, the management API) get no
CORS headers.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CORS_EXACT = frozenset(
    {"/jwks.json", "/register", "/token", "/introspect", "/revoke", "/device/code", "/device/token"}
)
CORS_PREFIXES = ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration", "/register/")
ALLOW_HEADERS = "Authorization, Content-Type, MCP-Protocol-Version"
ALLOW_METHODS = "GET, POST, PUT, DELETE, OPTIONS"


def cors_applies(path: str, prefix: str = "") -> bool:
    if prefix and path.startswith(prefix + "/"):
        path = path[len(prefix) :]
    return (
        path in CORS_EXACT
        or path.startswith(CORS_PREFIXES)
        or path.endswith("/.well-known/openid-configuration")
    )


class OAuthCors:
    def __init__(self, app: ASGIApp, issuer_path: str = "") -> None:
        self.app = app
        self.issuer_path = issuer_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not cors_applies(scope["path"], self.issuer_path):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:
            await send(
                {
                    "type": "http.response.start",
                    "status": 204,
                    "headers": [
                        (b"access-control-allow-origin", b"*"),
                        (b"access-control-allow-methods", ALLOW_METHODS.encode()),
                        (b"access-control-allow-headers", ALLOW_HEADERS.encode()),
                        (b"access-control-max-age", b"600"),
                        (b"vary", b"Origin"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"access-control-allow-origin", b"*"),
                    (b"access-control-expose-headers", b"WWW-Authenticate"),
                ]
            await send(message)

        await self.app(scope, receive, send_with_cors)
