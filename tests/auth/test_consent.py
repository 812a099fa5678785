"""Remembered consent covers exactly what the user approved: this client, these scopes, these resources.
Each test signs alice in once through the consent page, then asks again from the same browser (session
cookie) for something else, with prompt=none (which must fail with consent_required rather than mint a
code) and without it (which must show the consent page again). Before the fix consent was remembered per
(login, client), so one approval gave the client codes for any resource."""

from __future__ import annotations

import json
import time
from urllib.parse import quote

import httpx
import pytest
import redis.asyncio as aioredis

from shared import keys
from tests.control_plane.conftest import ADMIN, RunningControlPlane

from .conftest import CONSENT_TTL_SECONDS, MCP_HOST, RESOURCE, protect
from .oauth_flow import Browser, Client, authorize_url, consent_fields, login, query_of, register

pytestmark = pytest.mark.auth

SECOND_HOST = "second.test.localhost"
SECOND = f"http://{SECOND_HOST}:8080/mcp"


async def _two_resources(http: httpx.AsyncClient) -> Client:
    await protect(http)
    await protect(http, SECOND_HOST)
    response = await http.put(
        f"/api/v1/proxy/targets/{MCP_HOST}/resource",
        json={"path": "/mcp", "scopes_supported": ["mcp", "read"]},
        headers=ADMIN,
    )
    assert response.status_code == 200, response.text
    return await register(http)


async def _ask(browser: Browser, client: Client, resources: list[str], **extra: str) -> httpx.Response:
    url = authorize_url(client, verifier="v" * 43, resource=resources[0], **extra)
    url += "".join(f"&resource={quote(r, safe='')}" for r in resources[1:])
    return await browser.get(url)


async def _silently(browser: Browser, client: Client, resources: list[str], scope: str = "mcp") -> str:
    """prompt=none: 'code' when remembered consent covers the request, else the error it redirected with."""
    response = await _ask(browser, client, resources, scope=scope, prompt="none")
    assert response.status_code == 302, response.text
    redirect = query_of(response.headers["location"])
    return "code" if redirect.get("code") else redirect["error"]


async def test_consent_for_one_resource_does_not_cover_another(
    http: httpx.AsyncClient, cp: RunningControlPlane
) -> None:
    client = await _two_resources(http)
    browser = Browser(http)
    assert (await login(browser, client, resource=RESOURCE)).code
    assert await _silently(browser, client, [RESOURCE]) == "code"
    assert await _silently(browser, client, [SECOND]) == "consent_required"
    assert await _silently(browser, client, [RESOURCE, SECOND]) == "consent_required"
    page = await _ask(browser, client, [SECOND])
    assert page.status_code == 200 and SECOND in page.text and "Approve" in page.text


async def test_consent_for_some_scopes_does_not_cover_more(
    http: httpx.AsyncClient, cp: RunningControlPlane
) -> None:
    client = await _two_resources(http)
    browser = Browser(http)
    assert (await login(browser, client, resource=RESOURCE, scope="mcp")).code
    assert await _silently(browser, client, [RESOURCE], scope="mcp read") == "consent_required"
    page = await _ask(browser, client, [RESOURCE], scope="mcp read")
    assert page.status_code == 200 and "read" in page.text
    # Approving the wider request covers it and anything inside it.
    assert (await login(browser, client, resource=RESOURCE, scope="mcp read")).code
    for scope in ("mcp read", "read", "mcp"):
        assert await _silently(browser, client, [RESOURCE], scope=scope) == "code", scope


async def _approve(browser: Browser, page: httpx.Response) -> str:
    """Approve the consent page shown, sign in at the GitHub stand-in; the code the client gets."""
    assert page.status_code == 200, page.text
    response = await browser.post_form(
        "/authorize/consent", {**consent_fields(page.text), "decision": "approve"}
    )
    async with httpx.AsyncClient() as outside:
        github = await outside.get(response.headers["location"])
    response = await browser.get(github.headers["location"])
    return query_of(response.headers["location"])["code"]


async def test_consent_covers_subsets_of_one_approval_and_never_merges_approvals(
    http: httpx.AsyncClient, cp: RunningControlPlane
) -> None:
    client = await _two_resources(http)
    browser = Browser(http)
    assert (await login(browser, client, resource=RESOURCE)).code
    assert (await login(browser, client, resource=SECOND)).code
    # Two approvals, one resource each: together they do not approve a request for both.
    assert await _silently(browser, client, [RESOURCE]) == "code"
    assert await _silently(browser, client, [SECOND]) == "code"
    assert await _silently(browser, client, [RESOURCE, SECOND]) == "consent_required"
    # One approval for both covers the pair and each of them.
    assert await _approve(browser, await _ask(browser, client, [RESOURCE, SECOND]))
    for resources in ([RESOURCE, SECOND], [SECOND, RESOURCE], [RESOURCE], [SECOND]):
        assert await _silently(browser, client, resources) == "code", resources


async def test_a_different_client_needs_its_own_consent(
    http: httpx.AsyncClient, cp: RunningControlPlane
) -> None:
    client = await _two_resources(http)
    other = await register(http, name="Other")
    browser = Browser(http)
    assert (await login(browser, client, resource=RESOURCE)).code
    assert await _silently(browser, other, [RESOURCE]) == "consent_required"


async def test_consent_expires(
    http: httpx.AsyncClient, cp: RunningControlPlane, redis_client: aioredis.Redis
) -> None:
    client = await _two_resources(http)
    browser = Browser(http)
    assert (await login(browser, client, resource=RESOURCE)).code
    key = keys.oauth_consents("alice")
    [(consent_id, raw)] = (await redis_client.hgetall(key)).items()
    record = json.loads(raw)
    assert record["expires_at"] - record["created_at"] == pytest.approx(CONSENT_TTL_SECONDS, abs=1)
    assert 0 < await redis_client.ttl(key) <= CONSENT_TTL_SECONDS + 1
    assert await _silently(browser, client, [RESOURCE]) == "code"
    # As if the consent TTL had passed (the hash key outlives its records; each record's time counts).
    record["expires_at"] = time.time() - 1
    await redis_client.hset(key, consent_id, json.dumps(record))
    assert await _silently(browser, client, [RESOURCE]) == "consent_required"
