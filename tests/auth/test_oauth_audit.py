"""The OAuth audit against the real control plane and the GitHub stand-in: a full flow (consent, sign-in,
code, refresh, revocation) and its failures (denied consent, failed sign-in, bad PKCE, a reused refresh
token, invalid_target, a bad client secret) each leave an event with its reason; `/api/v1/logs/oauth/`
filters them, an ordinary token sees only events about its own proxies' resources; and after the flow and a
set of API writes no audit entry anywhere holds a secret that was used."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from shared import keys
from tests.control_plane.conftest import ADMIN, ADMIN_TOKEN, RunningControlPlane, bearer

from .conftest import MCP_HOST, RESOURCE
from .github_fake import GitHubFake
from .oauth_flow import Browser, login, redeem, refresh, register

pytestmark = pytest.mark.auth

OAUTH_LOG = "/api/v1/logs/oauth/"


async def events(http: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    response = await http.get(OAUTH_LOG, params=params, headers=headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def _tenant_with_protected_proxy(
    http: httpx.AsyncClient, name: str, host: str
) -> tuple[dict[str, str], str]:
    made = await http.post("/api/v1/tokens/", json={"name": name}, headers=ADMIN)
    assert made.status_code == 201, made.text
    token = made.json()["token"]
    headers = bearer(token)
    proxy = {"hostname": host, "target_url": "http://127.0.0.1:9"}
    assert (await http.post("/api/v1/proxy/targets/", json=proxy, headers=headers)).status_code == 201
    auth = {"allowed_users": ["alice"]}
    assert (
        await http.put(f"/api/v1/proxy/targets/{host}/auth", json=auth, headers=headers)
    ).status_code == 200
    return headers, token


async def test_flow_and_failures_are_audited_and_secret_free(
    http: httpx.AsyncClient, cp: RunningControlPlane, github: GitHubFake, redis_client: aioredis.Redis
) -> None:
    owner, owner_token = await _tenant_with_protected_proxy(http, "mcp-owner", MCP_HOST)
    stranger, stranger_token = await _tenant_with_protected_proxy(http, "stranger", "other.test.localhost")
    secrets_used: list[str] = [ADMIN_TOKEN, owner_token, stranger_token]

    client = await register(http)
    secrets_used.append(client.registration.get("registration_access_token", ""))
    browser = Browser(http)
    first = await login(browser, client, resource=RESOURCE)
    secrets_used += [first.code, first.verifier]
    tokens = (await redeem(http, client, first)).json()
    secrets_used += [tokens["access_token"], tokens["refresh_token"]]
    rotated = (await refresh(http, client, tokens["refresh_token"])).json()
    secrets_used += [rotated["access_token"], rotated["refresh_token"]]
    reused = await refresh(http, client, tokens["refresh_token"])  # grace is 0 here: a real reuse
    assert reused.status_code == 400

    second = await login(Browser(http), client, resource=RESOURCE)
    secrets_used += [second.code, second.verifier]
    bad_pkce = await redeem(http, client, second, code_verifier="x" * 50)
    assert bad_pkce.status_code == 400
    wrong_target = await redeem(http, client, second, resource="https://elsewhere.example/mcp")
    assert wrong_target.status_code == 400

    third = await login(Browser(http), client, resource=RESOURCE)
    secrets_used += [third.code, third.verifier]
    third_tokens = (await redeem(http, client, third)).json()
    secrets_used += [third_tokens["access_token"], third_tokens["refresh_token"]]
    revoked = await http.post(
        "/revoke", data={"token": third_tokens["access_token"], "client_id": client.client_id}
    )
    assert revoked.status_code == 200

    github.next_login = "nobody-at-github"  # the identity provider refuses the sign-in
    failed = await login(Browser(http), client, resource=RESOURCE, prompt="consent")
    assert failed.redirect.get("error") == "access_denied"
    github.next_login = "alice"

    machine = await http.post(
        "/api/v1/oauth/clients/",
        json={
            "client_name": "machine",
            "redirect_uris": ["https://app.example/cb"],
            "token_endpoint_auth_method": "client_secret_basic",
            "allow_client_credentials": True,
        },
        headers=ADMIN,
    )
    assert machine.status_code == 201, machine.text
    machine_id, machine_secret = machine.json()["client_id"], machine.json()["client_secret"]
    secrets_used.append(machine_secret)
    granted = await http.post(
        "/token",
        data={"grant_type": "client_credentials", "resource": RESOURCE},
        auth=(machine_id, machine_secret),
    )
    assert granted.status_code == 200, granted.text
    secrets_used.append(granted.json()["access_token"])
    bad_secret = await http.post(
        "/token",
        data={"grant_type": "client_credentials", "resource": RESOURCE},
        auth=(machine_id, "wrong-secret-55"),
    )
    assert bad_secret.status_code == 401
    secrets_used.append("wrong-secret-55")
    revoked_consents = await http.delete("/api/v1/oauth/consents/", params={"login": "alice"}, headers=ADMIN)
    assert revoked_consents.json()["revoked"] >= 1

    everything = await events(http, ADMIN, limit=500)
    kinds = [(e["event"], e["outcome"]) for e in everything]
    for expected in (
        ("consent_granted", "success"),
        ("sign_in", "success"),
        ("token_issued", "success"),
        ("token_refreshed", "success"),
        ("token_denied", "failure"),
        ("token_revoked", "success"),
        ("sign_in", "failure"),
        ("consent_revoked", "success"),
    ):
        assert expected in kinds, (expected, kinds)
    assert everything == sorted(everything, key=lambda e: e["id"], reverse=True)  # newest first

    signed_in = (await events(http, ADMIN, event="sign_in", outcome="success"))[-1]
    assert signed_in["login"] == "alice" and signed_in["client_id"] == client.client_id
    assert signed_in["resources"] == [RESOURCE] and signed_in["client_address"] == "127.0.0.1"
    issued = await events(http, ADMIN, event="token_issued", client_id=client.client_id)
    assert {e["grant_type"] for e in issued} == {"authorization_code"}
    assert all(e["login"] == "alice" and e["resources"] == [RESOURCE] for e in issued)
    machine_issued = (await events(http, ADMIN, event="token_issued", client_id=machine_id))[0]
    assert machine_issued["grant_type"] == "client_credentials" and machine_issued["login"] == ""

    reasons = [e["reason"] for e in await events(http, ADMIN, event="token_denied")]
    assert any(r.startswith("invalid_grant") and "already used" in r for r in reasons), reasons
    assert any("code_verifier does not match" in r for r in reasons), reasons
    assert any(r.startswith("invalid_target") for r in reasons), reasons
    assert any(r.startswith("invalid_client") for r in reasons), reasons
    bad_client = next(
        e for e in await events(http, ADMIN, event="token_denied") if e["reason"].startswith("invalid_client")
    )
    assert bad_client["client_id"] == machine_id  # from the Basic user part, never the secret
    failed_sign_in = (await events(http, ADMIN, event="sign_in", outcome="failure"))[0]
    assert "access_denied" in failed_sign_in["reason"]

    # Filters combine; the login filter ignores case; a filter on a client address works.
    assert await events(http, ADMIN, login="ALICE", event="token_refreshed")
    assert await events(http, ADMIN, client_ip="127.0.0.1", resource=RESOURCE)
    assert await events(http, ADMIN, client_ip="10.9.9.9") == []

    # The owner of the protected proxy sees the events about its resource, and only those.
    seen_by_owner = await events(http, owner, limit=500)
    assert seen_by_owner and all(RESOURCE in e["resources"] for e in seen_by_owner)
    assert {"token_issued", "sign_in", "token_refreshed"} <= {e["event"] for e in seen_by_owner}
    assert await events(http, stranger, limit=500) == []
    assert await events(http, stranger, login="alice") == []
    assert (await http.get(OAUTH_LOG)).status_code == 401

    # API writes with secrets of their own, then the scan of every stored audit entry.
    proxy_secret = "Bearer upstream-credential-31337"
    update = {"target_url": "http://127.0.0.1:9", "request_headers_set": {"Authorization": proxy_secret}}
    assert (
        await http.put(f"/api/v1/proxy/targets/{MCP_HOST}", json=update, headers=owner)
    ).status_code == 200
    app_secret = "github-app-secret-c0ffee"
    auth = {"allowed_users": ["alice"], "github_client_id": "Iv1.matrix", "github_client_secret": app_secret}
    assert (
        await http.put(f"/api/v1/proxy/targets/{MCP_HOST}/auth", json=auth, headers=owner)
    ).status_code == 200
    assert (await http.post("/api/v1/oauth/keys/rotate", json={}, headers=ADMIN)).status_code == 200
    secrets_used += [proxy_secret, "upstream-credential-31337", app_secret]

    stored = json.dumps(
        [
            await redis_client.xrange(keys.audit_oauth_stream()),
            await redis_client.xrange(keys.audit_changes_stream()),
        ]
    )
    for secret in secrets_used:
        assert secret, "a secret the test meant to check is empty"
        assert secret not in stored, f"an audit entry holds a secret: {secret[:12]}..."
    rotation = await http.get("/api/v1/logs/audit/", params={"kind": "signing-key"}, headers=ADMIN)
    assert [e["action"] for e in rotation.json()["items"]] == ["rotated"]
    assert "BEGIN" not in json.dumps(rotation.json())


async def test_an_oauth_admins_writes_name_the_login(
    http: httpx.AsyncClient, cp: RunningControlPlane, redis_client: aioredis.Redis
) -> None:
    from control_plane.oauth.api_access import CLI_CLIENT_ID

    from .insider_tokens import active_signing_keys, management_token

    signer = await active_signing_keys(cp, http, redis_client)
    alice = bearer(management_token(cp, signer, client_id=CLI_CLIENT_ID, login="alice"))
    proxy = {"hostname": "by-alice.test.localhost", "target_url": "http://127.0.0.1:9", "enable_https": False}
    assert (await http.post("/api/v1/proxy/targets/", json=proxy, headers=alice)).status_code == 201
    page = (await http.get("/api/v1/logs/audit/", params={"name": proxy["hostname"]}, headers=ADMIN)).json()
    assert [(e["actor"], e["owner"], e["action"]) for e in page["items"]] == [
        ("oauth:alice", "admin", "created")
    ]
    assert (await http.get("/api/v1/logs/audit/", params={"actor": "oauth:alice"}, headers=alice)).json()[
        "items"
    ]
