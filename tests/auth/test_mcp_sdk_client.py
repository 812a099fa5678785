"""The MCP Python SDK client (`mcp` 2.x, OAuthClientProvider) through the real data plane (`python -m
data_plane`) to a real, unprotected MCP SDK server (tests/auth/mcp_upstream.py): 401 -> PRM -> AS metadata
-> DCR -> authorize -> consent -> GitHub login -> token -> tools/call -> refresh -> tools/call. The data
plane does all the protecting. A browser is scripted with httpx (tests/auth/oauth_flow.py).
"""

from __future__ import annotations

import json
import time

import httpx
import httpx2  # the MCP SDK's HTTP client
import pytest
import redis.asyncio as aioredis

# A dev dependency (pyproject, uv.lock): imported plainly, so a missing SDK fails the run instead of
# skipping the only test of a real MCP client against the data plane.
from mcp import Client
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from tests.control_plane.conftest import ADMIN, RunningControlPlane
from tests.data_plane.conftest import DataPlane

from .conftest import data_plane_caught_up, protect
from .github_fake import GitHubFake
from .oauth_flow import REDIRECT_URI, Browser, query_of

pytestmark = [pytest.mark.auth, pytest.mark.slow]


class MemoryStorage:
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


@pytest.fixture
async def protected_server(
    http: httpx.AsyncClient,
    redis_client: aioredis.Redis,
    auth_data_plane: DataPlane,
    mcp_upstream: str,
) -> str:
    """The MCP endpoint as clients see it: the data plane's port, proxy `127.0.0.1` protected for alice."""
    await protect(http, "127.0.0.1", users=["alice"], target_url=mcp_upstream)
    await data_plane_caught_up(redis_client, auth_data_plane)
    return f"http://127.0.0.1:{auth_data_plane.http_port}/mcp"


def _provider(http: httpx.AsyncClient, server_url: str, storage: MemoryStorage) -> OAuthClientProvider:
    browser = Browser(http)
    landed: dict[str, str] = {}

    async def redirect_handler(authorization_url: str) -> None:
        # The user's browser: our consent page, approve, GitHub (stand-in), back to the client's redirect URI.
        response = await browser.get(authorization_url)
        if response.status_code == 200:
            from .oauth_flow import consent_fields

            response = await browser.post_form(
                "/authorize/consent", {**consent_fields(response.text), "decision": "approve"}
            )
            async with httpx.AsyncClient() as outside:
                github = await outside.get(response.headers["location"])
            response = await browser.get(github.headers["location"])
        assert response.status_code == 302, response.text
        landed.clear()
        landed.update(query_of(response.headers["location"]))

    async def callback_handler() -> AuthorizationCodeResult:
        return AuthorizationCodeResult(code=landed["code"], state=landed.get("state"), iss=landed.get("iss"))

    metadata = OAuthClientMetadata(
        client_name="SDK test client",
        redirect_uris=[REDIRECT_URI],
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        token_endpoint_auth_method="none",
        scope="mcp",
    )
    return OAuthClientProvider(server_url, metadata, storage, redirect_handler, callback_handler)


async def _whoami(
    server_url: str,
    provider: OAuthClientProvider,
    seen: list[tuple[int, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, object]:
    async def record(response: httpx2.Response) -> None:
        if seen is not None and str(response.request.url) == server_url:
            await response.aread()
            seen.append((response.status_code, response.text))

    async with httpx2.AsyncClient(
        auth=provider, timeout=30, headers=headers or {}, event_hooks={"response": [record]}
    ) as http_client:
        async with Client(streamable_http_client(server_url, http_client=http_client)) as client:
            result = await client.call_tool("whoami", {})
    assert not result.is_error, result
    text = result.content[0].text  # type: ignore[union-attr]
    return json.loads(text)


async def test_sdk_client_full_flow(
    http: httpx.AsyncClient, cp: RunningControlPlane, protected_server: str
) -> None:
    # Without a token the resource answers 401 pointing at its metadata.
    async with httpx.AsyncClient() as plain:
        response = await plain.post(
            protected_server, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        )
    assert response.status_code == 401
    assert 'resource_metadata="http://127.0.0.1:' in response.headers["www-authenticate"]

    storage = MemoryStorage()
    provider = _provider(http, protected_server, storage)
    who = await _whoami(protected_server, provider)
    assert who == {"user": "alice", "scopes": "mcp", "authorization_reached_upstream": False, "forged": None}
    assert storage.client_info is not None and storage.client_info.client_id.startswith("mhp_")
    first = storage.tokens
    assert first is not None and first.refresh_token

    # A client cannot forge identity headers: ours replace them, theirs are stripped.
    forged = await _whoami(
        protected_server, provider, headers={"X-Auth-User": "mallory", "X-Forwarded-User": "mallory"}
    )
    assert forged["user"] == "alice" and forged["forged"] is None
    # A token in the query string is not a token.
    async with httpx.AsyncClient() as plain:
        response = await plain.post(
            protected_server,
            params={"access_token": first.access_token},
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        )
    assert response.status_code == 401

    # Let the access token lapse (client side): the SDK refreshes, then calls again.
    provider.context.token_expiry_time = time.time() - 1
    who = await _whoami(protected_server, provider)
    assert who["user"] == "alice"
    assert storage.tokens is not None and storage.tokens.refresh_token != first.refresh_token
    assert storage.tokens.access_token != first.access_token


async def test_sdk_client_user_not_on_the_allowlist(
    http: httpx.AsyncClient, cp: RunningControlPlane, protected_server: str, github: GitHubFake
) -> None:
    github.next_login = "bob"
    provider = _provider(http, protected_server, MemoryStorage())
    seen: list[tuple[int, str]] = []
    with pytest.raises(Exception):  # noqa: B017 - the SDK wraps the HTTP 403 in task-group errors
        await _whoami(protected_server, provider, seen)
    # bob signed in fine, but the resource refuses him, and says who can fix it (not who is allowed).
    refused = [body for status, body in seen if status == 403]
    assert refused, seen
    assert "'bob' is not allowed" in refused[-1] and "operator" in refused[-1] and "alice" not in refused[-1]


async def test_sdk_client_gets_the_scopes_the_resource_asks_for(
    http: httpx.AsyncClient,
    cp: RunningControlPlane,
    protected_server: str,
    redis_client: aioredis.Redis,
    auth_data_plane: DataPlane,
) -> None:
    """The resource needs `mcp admin`; the client starts out asking for `mcp` only. Its 401 (or 403
    insufficient_scope, for a step-up) names the scopes, the AS offers `admin` because the proxy's auth
    config requires it, and the call goes through with a token carrying both."""
    body = {"allowed_users": ["alice"], "required_scopes": ["mcp", "admin"]}
    assert (
        await http.put("/api/v1/proxy/targets/127.0.0.1/auth", json=body, headers=ADMIN)
    ).status_code == 200
    await data_plane_caught_up(redis_client, auth_data_plane)
    storage = MemoryStorage()
    who = await _whoami(protected_server, _provider(http, protected_server, storage))
    assert who["user"] == "alice" and set(str(who["scopes"]).split()) == {"mcp", "admin"}
    assert storage.tokens is not None and set((storage.tokens.scope or "").split()) >= {"mcp", "admin"}
