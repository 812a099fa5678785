"""`Mcp-Method` / `Mcp-Name` request headers (MCP 2026-07-28) must agree with the JSON-RPC body; an
intermediary rejects a mismatch with 400 so routing or policy decided on headers cannot be fooled.

`Mcp-Method` must equal the body's `method`. `Mcp-Name` must equal `params.name` (tools/call,
prompts/get) or `params.uri` (resources/read, resources/subscribe, resources/unsubscribe). Requests without
these headers are not checked. A batch (JSON array) cannot match single-valued headers and is refused when
they are present.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

NAME_PARAM = {
    "tools/call": "name",
    "prompts/get": "name",
    "resources/read": "uri",
    "resources/subscribe": "uri",
    "resources/unsubscribe": "uri",
}


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
