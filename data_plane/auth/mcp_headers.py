"""`Mcp-Method` / `Mcp-Name` request headers (MCP 2026-07-28) must agree with the JSON-RPC body; an
intermediary rejects a mismatch with 400 so routing or policy decided on headers cannot be fooled.

`Mcp-Method` must equal the body's `method`. `Mcp-Name` must equal `params.name` (tools/call,
prompts/get) or `params.uri` (resources/read, resources/subscribe, resources/unsubscribe). Requests without
these headers are not checked. A batch (JSON array) cannot match single-valued headers and is refused when
they are present.

On an unprotected proxy the body is never read (it streams), so nothing is checked; the request log still
names the headers' method and tool (`logged_fields`), keeping only well-formed, bounded values.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

NAME_PARAM = {
    "tools/call": "name",
    "prompts/get": "name",
    "resources/read": "uri",
    "resources/subscribe": "uri",
    "resources/unsubscribe": "uri",
}


# JSON-RPC method names as MCP spells them (tools/call, notifications/initialized, ...).
_LOGGED_METHOD = re.compile(rb"[A-Za-z0-9_./$-]{1,128}")
# A tool or prompt name, or a resource URI: visible ASCII (no spaces or control characters), bounded.
_LOGGED_NAME = re.compile(rb"[\x21-\x7e]{1,512}")


def logged_fields(mcp_method: bytes | None, mcp_name: bytes | None) -> tuple[str, str]:
    """(method, name) for the request log of an unchecked request: "" for a missing or malformed value, and
    no name for a method that names nothing (as NAME_PARAM says; the checked path could not log one)."""
    method = (mcp_method or b"").strip()
    if not _LOGGED_METHOD.fullmatch(method):
        return "", ""
    text = method.decode("ascii")
    name = (mcp_name or b"").strip()
    if text not in NAME_PARAM or not _LOGGED_NAME.fullmatch(name):
        return text, ""
    return text, name.decode("ascii")


@dataclass(frozen=True, slots=True)
class HeadersMatch:
    pass


@dataclass(frozen=True, slots=True)
class HeadersMismatch:
    reason: str
    status: int = 400


McpHeaderCheck = HeadersMatch | HeadersMismatch


def check(mcp_method: str | None, mcp_name: str | None, body: bytes) -> McpHeaderCheck:
    if mcp_method is None and mcp_name is None:
        return HeadersMatch()
    try:
        message = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: nesting deeper than the parser's stack (`[[[[...`), which no JSON-RPC message has.
        return HeadersMismatch("Mcp-Method/Mcp-Name headers sent with a body that is not JSON")
    if not isinstance(message, dict):
        return HeadersMismatch("Mcp-Method/Mcp-Name headers cannot describe a JSON-RPC batch")
    method = message.get("method")
    if not isinstance(method, str):
        return HeadersMismatch("Mcp-Method header sent with a body that has no JSON-RPC method")
    if mcp_method is not None and mcp_method.strip() != method:
        return HeadersMismatch(
            f"Mcp-Method header {mcp_method.strip()!r} does not match the body's method {method!r}"
        )
    if mcp_name is not None:
        param = NAME_PARAM.get(method)
        params = message.get("params")
        value = params.get(param) if param is not None and isinstance(params, dict) else None
        if not isinstance(value, str):
            return HeadersMismatch(f"Mcp-Name header sent for {method!r}, whose body names nothing")
        if mcp_name.strip() != value:
            return HeadersMismatch(
                f"Mcp-Name header {mcp_name.strip()!r} does not match the body's {param} {value!r}"
            )
    return HeadersMatch()
