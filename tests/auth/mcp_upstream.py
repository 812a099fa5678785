"""Test-only: a plain MCP server built with the MCP Python SDK (streamable HTTP at /mcp), with no protection
of its own: the real data plane in front of it does that.

    python -m tests.auth.mcp_upstream   (env: PORT)

Tool `whoami` echoes the identity headers the upstream received, and whether a bearer token leaked past
the data plane.
"""

from __future__ import annotations

import json
import os

import uvicorn
from mcp.server.mcpserver import Context, MCPServer

mcp = MCPServer("upstream-test-server")


@mcp.tool()
async def whoami(ctx: Context) -> str:
    headers = {k.lower(): v for k, v in (ctx.headers or {}).items()}
    return json.dumps(
        {
            "user": headers.get("x-auth-user"),
            "scopes": headers.get("x-auth-scopes"),
            "authorization_reached_upstream": "authorization" in headers,
            "forged": headers.get("x-forwarded-user"),
        }
    )


if __name__ == "__main__":
    # host="127.0.0.1" keeps the SDK's DNS-rebinding guard on: the data plane forwards Host 127.0.0.1:<port>.
    uvicorn.run(
        mcp.streamable_http_app(host="127.0.0.1"),
        host="127.0.0.1",
        port=int(os.environ["PORT"]),
        log_level="warning",
    )
