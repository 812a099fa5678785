"""The edge middlewares' own answers (413, 429): JSON in the shape the endpoint's clients parse, the
management API's `{"detail": ...}` or RFC 6749's `{"error", "error_description"}` for the OAuth endpoints."""

from __future__ import annotations

import json

from starlette.types import Scope, Send


async def send_error(
    scope: Scope, send: Send, status: int, error: str, message: str, headers: list[tuple[bytes, bytes]]
) -> None:
    if scope["path"].startswith("/api/"):
        document: dict[str, str] = {"detail": message}
    else:
        document = {"error": error, "error_description": message}
    body = json.dumps(document).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
