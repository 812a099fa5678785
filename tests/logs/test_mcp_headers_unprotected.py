"""On an unprotected proxy the request log takes the MCP method and tool from the `Mcp-Method` / `Mcp-Name`
request headers (its body streams and is never read): requests through a real data plane, indexed by the
control plane, searchable with `/api/v1/logs/?tool=` and `?mcp_method=`; malformed values are not logged,
and a request without the headers logs none."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.control_plane.conftest import ADMIN

from .conftest import Tenants, search, wait_until


async def _post(tenants: Tenants, headers: dict[str, str], body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(
            tenants.url("/mcp"),
            content=json.dumps(body).encode(),
            headers={"Host": tenants.alice_host, "Content-Type": "application/json", **headers},
        )


async def test_mcp_headers_of_an_unprotected_proxy_are_logged_and_searchable(
    logs_api: httpx.AsyncClient, tenants: Tenants
) -> None:
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "search", "arguments": {}}}
    sent = [
        ({"Mcp-Method": "tools/call", "Mcp-Name": "search"}, call),
        ({"Mcp-Method": "tools/list"}, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
        # Not checked against the body here (it is streamed unread): logged as sent when well-formed...
        ({"Mcp-Method": "resources/read", "Mcp-Name": "file:///notes.txt"}, call),
        # ...and not at all when not: a method with spaces, a name with spaces, a name for a method that
        # has none, an oversized name.
        ({"Mcp-Method": "tools call", "Mcp-Name": "search"}, call),
        ({"Mcp-Method": "tools/call", "Mcp-Name": "two words"}, call),
        ({"Mcp-Method": "initialize", "Mcp-Name": "search"}, call),
        ({"Mcp-Method": "tools/call", "Mcp-Name": "x" * 600}, call),
        ({}, call),
    ]
    for headers, body in sent:
        assert (await _post(tenants, headers, body)).status_code == 200
    await wait_until(
        lambda: _count(logs_api, len(sent)), f"{len(sent)} entries written and indexed", deadline_seconds=30
    )
    items = (await search(logs_api, host=tenants.alice_host, limit=50))["items"]
    logged = sorted((e["mcp_method"], e["mcp_tool"]) for e in items)
    assert logged == sorted(
        [
            ("tools/call", "search"),
            ("tools/list", ""),
            ("resources/read", "file:///notes.txt"),
            ("", ""),
            ("tools/call", ""),
            ("initialize", ""),
            ("tools/call", ""),
            ("", ""),
        ]
    )

    by_tool = (await search(logs_api, tool="search", limit=50))["items"]
    assert [(e["host"], e["mcp_method"], e["mcp_tool"]) for e in by_tool] == [
        (tenants.alice_host, "tools/call", "search")
    ]
    by_method = (await search(logs_api, mcp_method="tools/list", limit=50))["items"]
    assert [e["mcp_method"] for e in by_method] == ["tools/list"]
    # The proxy's owner finds them too; another token does not.
    assert (await search(logs_api, tenants.alice, tool="search"))["items"]
    assert (await search(logs_api, tenants.bob, tool="search"))["items"] == []


async def _count(api: httpx.AsyncClient, total: int) -> bool:
    body = await search(api, ADMIN, limit=500)
    return len(body["items"]) == total and body["indexer"]["unindexed"] == 0
