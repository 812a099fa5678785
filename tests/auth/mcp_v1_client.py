"""Test-only: the MCP Python SDK 1.x client (`mcp<2`), run by the interpreter of its own venv (see
tests/auth/test_mcp_v1_client.py), so it must not import anything from this repo.

    <mcp1-venv>/bin/python tests/auth/mcp_v1_client.py SERVER_URL

Runs the whole OAuth flow with the 1.x `OAuthClientProvider` (401 -> PRM -> AS metadata -> DCR ->
authorize -> consent -> GitHub stand-in -> token) and calls the `whoami` tool, then prints one JSON object
on stdout: the tool's answer, the registered client id and the token fields the SDK stored.
The browser leg is scripted with httpx like tests/auth/oauth_flow.py, keeping cookies by hand because
ours are `__Host-`/Secure and a cookie jar would withhold them over plain-HTTP loopback.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx
from mcp import ClientSession
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

REDIRECT_URI = "http://127.0.0.1:38999/callback"


class MemoryStorage(TokenStorage):
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


class Browser:
    """Just enough of a browser: absolute URLs, cookies by hand, no redirect following."""

    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}
        self.http = httpx.AsyncClient(follow_redirects=False, timeout=20)

    def _absorb(self, response: httpx.Response) -> None:
        for header in response.headers.get_list("set-cookie"):
            pair, _, attributes = header.partition(";")
            name, _, value = pair.strip().partition("=")
            if "max-age=0" in attributes.lower().replace(" ", ""):
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value

    def _headers(self) -> dict[str, str]:
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}

    async def get(self, url: str) -> httpx.Response:
        response = await self.http.get(url, headers=self._headers())
        self._absorb(response)
        return response

    async def post_form(self, url: str, data: dict[str, str]) -> httpx.Response:
        headers = {**self._headers(), "Content-Type": "application/x-www-form-urlencoded"}
        response = await self.http.post(url, content=urlencode(data), headers=headers)
        self._absorb(response)
        return response


def _query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def main(server_url: str) -> dict[str, Any]:
    browser = Browser()
    landed: dict[str, str] = {}
    trail: list[str] = []

    async def redirect_handler(authorization_url: str) -> None:
        # The user's browser: our consent page, approve, GitHub (stand-in), back to the redirect URI.
        trail.append(authorization_url)
        response = await browser.get(authorization_url)
        if response.status_code == 200:
            fields = dict(
                re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">', response.text)
            )
            form = {k: unescape(v) for k, v in fields.items()}
            response = await browser.post_form(
                urljoin(authorization_url, "/authorize/consent"), {**form, "decision": "approve"}
            )
            if response.status_code != 302:
                raise RuntimeError(f"consent: {response.status_code} {response.text[:500]}")
            async with httpx.AsyncClient() as outside:  # the GitHub stand-in, on its own socket
                github = await outside.get(response.headers["location"])
            response = await browser.get(github.headers["location"])
        if response.status_code != 302:
            raise RuntimeError(f"authorize: {response.status_code} {response.text[:500]}")
        landed.clear()
        landed.update(_query_of(response.headers["location"]))

    async def callback_handler() -> tuple[str, str | None]:
        return landed["code"], landed.get("state")

    storage = MemoryStorage()
    metadata = OAuthClientMetadata(
        client_name="SDK 1.x test client",
        redirect_uris=[REDIRECT_URI],  # type: ignore[list-item]
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        token_endpoint_auth_method="none",
        scope="mcp",
    )
    provider = OAuthClientProvider(server_url, metadata, storage, redirect_handler, callback_handler)
    async with streamablehttp_client(server_url, auth=provider, timeout=30) as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            result = await session.call_tool("whoami", {})
    await browser.http.aclose()
    text = result.content[0].text if result.content else ""  # type: ignore[union-attr]
    return {
        "is_error": result.isError,
        "whoami": json.loads(text) if not result.isError else text,
        "client_id": storage.client_info.client_id if storage.client_info else None,
        "has_access_token": bool(storage.tokens and storage.tokens.access_token),
        "has_refresh_token": bool(storage.tokens and storage.tokens.refresh_token),
        "token_scope": storage.tokens.scope if storage.tokens else None,
        "authorization_urls": trail,
        "code_issuer": landed.get("iss"),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1]))))
