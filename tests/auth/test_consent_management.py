"""Remembered consents are listed and revoked by the user (a page on the authorization server, for the
browser's signed-in session, with CSRF-checked revoke forms) and by the admin (/api/v1/oauth/consents/ and
`mhp oauth consents list|revoke`). After a revocation the client must ask again: prompt=none fails."""

from __future__ import annotations

import json
import re

import httpx
import pytest
import redis.asyncio as aioredis

from shared import keys
from tests.control_plane.conftest import ADMIN, RunningControlPlane, bearer, create_token
from tests.control_plane.test_cli import fails, ok, run

from .conftest import CONSENT_TTL_SECONDS, RESOURCE, protect
from .github_fake import GitHubFake
from .oauth_flow import Browser, Client, authorize_url, login, query_of, register

pytestmark = pytest.mark.auth

CONSENTS = "/api/v1/oauth/consents/"


async def _silently(browser: Browser, client: Client) -> str:
    response = await browser.get(authorize_url(client, verifier="v" * 43, resource=RESOURCE, prompt="none"))
    redirect = query_of(response.headers["location"])
    return "code" if redirect.get("code") else redirect["error"]


async def _approved(
    http: httpx.AsyncClient, github: GitHubFake, who: str, name: str
) -> tuple[Browser, Client]:
    client = await register(http, name=name)
    browser = Browser(http)
    github.next_login = who
    assert (await login(browser, client, resource=RESOURCE)).code
    assert await _silently(browser, client) == "code"
    return browser, client


def _revoke_forms(html: str) -> dict[str, str]:
    """consent id -> CSRF token, from the revoke forms of the consents page."""
    return dict(
        re.findall(
            r'name="consent_id" value="([^"]+)"><input type="hidden" name="csrf_token" value="([^"]+)"', html
        )
    )


async def test_a_user_lists_and_revokes_their_own_consents(
    http: httpx.AsyncClient, cp: RunningControlPlane, github: GitHubFake
) -> None:
    await protect(http, users=["alice", "bob"])
    alice, tool = await _approved(http, github, "alice", "Alice's <b>tool</b>")
    bob, bobs_tool = await _approved(http, github, "bob", "Bob's tool")

    page = await alice.get("/consents")
    assert page.status_code == 200 and page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "Alice&#x27;s &lt;b&gt;tool&lt;/b&gt;" in page.text and RESOURCE in page.text
    assert "Bob" not in page.text  # only the signed-in user's records
    [(consent_id, csrf)] = _revoke_forms(page.text).items()

    # CSRF: no token, a wrong token, or the right token from a browser without the page's cookie.
    for form in ({"consent_id": consent_id}, {"consent_id": consent_id, "csrf_token": "forged"}):
        assert (await alice.post_form("/consents/revoke", form)).status_code == 403
    cookieless = Browser(http, cookies={k: v for k, v in alice.cookies.items() if "consents" not in k})
    refused = await cookieless.post_form("/consents/revoke", {"consent_id": consent_id, "csrf_token": csrf})
    assert refused.status_code == 403
    # Bob cannot revoke alice's record with his own page's token.
    bobs_page = await bob.get("/consents")
    [(_bobs_id, bobs_csrf)] = _revoke_forms(bobs_page.text).items()
    response = await bob.post_form("/consents/revoke", {"consent_id": consent_id, "csrf_token": bobs_csrf})
    assert response.status_code == 302
    assert await _silently(alice, tool) == "code"

    response = await alice.post_form("/consents/revoke", {"consent_id": consent_id, "csrf_token": csrf})
    assert response.status_code == 302 and response.headers["location"].endswith("/consents")
    assert await _silently(alice, tool) == "consent_required"
    assert consent_id not in (await alice.get("/consents")).text
    assert await _silently(bob, bobs_tool) == "code"  # bob's approval is untouched


async def test_the_consents_page_needs_a_signed_in_browser(
    http: httpx.AsyncClient, cp: RunningControlPlane
) -> None:
    response = await http.get("/consents")
    assert response.status_code == 401 and "not signed in" in response.text.lower()
    response = await Browser(http).post_form("/consents/revoke", {"consent_id": "x", "csrf_token": "y"})
    assert response.status_code == 401


async def test_the_admin_lists_and_revokes_consents(
    http: httpx.AsyncClient, cp: RunningControlPlane, github: GitHubFake
) -> None:
    await protect(http, users=["alice", "bob"])
    alice, tool = await _approved(http, github, "alice", "Tool")
    _, other = await _approved(http, github, "alice", "Other")
    bob, bobs_tool = await _approved(http, github, "bob", "Tool")

    everything = (await http.get(CONSENTS, headers=ADMIN)).json()
    assert {(c["login"], c["client_id"]) for c in everything} == {
        ("alice", tool.client_id),
        ("alice", other.client_id),
        ("bob", bobs_tool.client_id),
    }
    [record] = (
        await http.get(CONSENTS, params={"login": "ALICE", "client_id": tool.client_id}, headers=ADMIN)
    ).json()
    assert record["scopes"] == ["mcp"] and record["resources"] == [RESOURCE]
    assert record["expires_at"] - record["created_at"] == pytest.approx(CONSENT_TTL_SECONDS, abs=1)
    assert {
        c["client_id"] for c in (await http.get(CONSENTS, params={"login": "alice"}, headers=ADMIN)).json()
    } == {
        tool.client_id,
        other.client_id,
    }

    assert (await http.delete(CONSENTS, headers=ADMIN)).status_code == 422  # no filter: refused
    response = await http.delete(
        CONSENTS, params={"login": "alice", "client_id": tool.client_id}, headers=ADMIN
    )
    assert response.status_code == 200 and response.json() == {"revoked": 1}
    assert await _silently(alice, tool) == "consent_required"
    assert await _silently(alice, other) == "code"
    response = await http.delete(CONSENTS, params={"consent_id": everything[0]["consent_id"]}, headers=ADMIN)
    assert response.status_code == 200
    response = await http.delete(CONSENTS, params={"login": "bob"}, headers=ADMIN)
    assert response.json() == {"revoked": 1}
    assert await _silently(bob, bobs_tool) == "consent_required"


async def test_consent_endpoints_are_for_the_admin_only(
    http: httpx.AsyncClient, cp: RunningControlPlane
) -> None:
    ordinary = bearer(await create_token(http, "ordinary"))
    for method, params in (("GET", {}), ("DELETE", {"login": "alice"})):
        assert (await http.request(method, CONSENTS, params=params)).status_code == 401
        refused = await http.request(method, CONSENTS, params=params, headers=ordinary)
        assert refused.status_code == 403 and "admin" in refused.json()["detail"]
        assert (await http.request(method, CONSENTS, params=params, headers=ADMIN)).status_code == 200


async def test_consents_cli(http: httpx.AsyncClient, cp: RunningControlPlane, github: GitHubFake) -> None:
    await protect(http)
    browser, client = await _approved(http, github, "alice", "CLI-listed tool")
    listed = json.loads(ok(run(cp, "oauth", "consents", "list", "--login", "alice", "--json")))
    assert [c["client_id"] for c in listed] == [client.client_id]
    table = ok(run(cp, "oauth", "consents", "list"))
    assert "CLI-listed tool" in table and "alice" in table
    assert "--login" in fails(run(cp, "oauth", "consents", "revoke"))
    revoked = json.loads(ok(run(cp, "oauth", "consents", "revoke", "--client", client.client_id, "--json")))
    assert revoked == {"revoked": 1}
    assert await _silently(browser, client) == "consent_required"


async def test_a_login_whose_consents_expired_leaves_the_admin_index(
    http: httpx.AsyncClient, cp: RunningControlPlane, github: GitHubFake, redis_client: aioredis.Redis
) -> None:
    await protect(http)
    await _approved(http, github, "alice", "Tool")
    assert await redis_client.smembers(keys.oauth_consent_logins()) == {"alice"}
    await redis_client.delete(keys.oauth_consents("alice"))  # as when the hash's TTL runs out
    assert (await http.get(CONSENTS, headers=ADMIN)).json() == []
    assert await redis_client.smembers(keys.oauth_consent_logins()) == set()
