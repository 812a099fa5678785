"""The OAuth audit's newer events against the real control plane, the GitHub stand-in and the HTTPS document
server: tokens issued for a resource whose allowlist will refuse them (`allowlist_denied`, for users and for
machine clients), device-login starts (`device_authorization`), Dynamic Client Registration and its RFC 7592
management (`client_registered`, `client_updated`, `client_deleted`), Client ID Metadata Document fetches
(`client_metadata_fetched`) and introspection (`token_introspected`), each with its reason when refused;
searchable through /api/v1/logs/oauth/ and `mhp logs oauth`; and no stored entry holds a secret used."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from control_plane.oauth.api_access import CLI_CLIENT_ID
from shared import keys
from tests.control_plane.conftest import ADMIN, ADMIN_TOKEN, RunningControlPlane, bearer
from tests.control_plane.test_cli import ok, run

from .conftest import MCP_HOST, RESOURCE, protect
from .github_fake import GitHubFake
from .https_documents import DocumentServer
from .oauth_flow import REDIRECT_URI, Browser, Client, login, redeem, register
from .test_oauth_audit import events

pytestmark = pytest.mark.auth

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def _one(items: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    matching = [e for e in items if all(e.get(k) == v for k, v in fields.items())]
    assert len(matching) == 1, (fields, items)
    return matching[0]


async def _user_tokens(http: httpx.AsyncClient, client: Client, github: GitHubFake, login_name: str) -> str:
    github.next_login = login_name
    result = await login(Browser(http), client, resource=RESOURCE)
    answer = await redeem(http, client, result)
    assert answer.status_code == 200, answer.text  # issued: the allowlist is the data plane's to enforce
    token: str = answer.json()["access_token"]
    return token


async def test_tokens_the_allowlist_will_refuse_are_recorded(
    http: httpx.AsyncClient, cp: RunningControlPlane, github: GitHubFake
) -> None:
    await protect(http, users=["alice"], orgs=["acme"])
    client = await register(http)
    await _user_tokens(http, client, github, "alice")  # listed
    await _user_tokens(http, client, github, "bob")  # neither listed nor in acme
    denied = await events(http, ADMIN, event="allowlist_denied")
    entry = _one(denied, login="bob")
    assert entry["outcome"] == "failure" and entry["client_id"] == client.client_id
    assert entry["resources"] == [RESOURCE] and entry["grant_type"] == "authorization_code"
    assert entry["reason"].startswith("access_denied: user 'bob' is not on the allowlist")
    assert MCP_HOST in entry["reason"] and "403" in entry["reason"]
    assert [e["login"] for e in denied] == ["bob"]  # alice is on it: nothing recorded for her

    # An organisation admits: with only `acme` listed, alice (a member) is admitted and carol is not.
    only_org = {"allowed_users": [], "allowed_orgs": ["acme"]}
    assert (
        await http.put(f"/api/v1/proxy/targets/{MCP_HOST}/auth", json=only_org, headers=ADMIN)
    ).status_code == 200
    await _user_tokens(http, client, github, "alice")
    await _user_tokens(http, client, github, "carol")
    assert sorted(e["login"] for e in await events(http, ADMIN, event="allowlist_denied")) == ["bob", "carol"]

    # The proxy's owner finds it by login and resource; the admin by outcome and client.
    assert await events(http, ADMIN, event="allowlist_denied", login="CAROL", resource=RESOURCE)
    assert await events(http, ADMIN, outcome="failure", client_id=client.client_id)


async def test_machine_clients_outside_allowed_clients_and_device_logins_are_recorded(
    http: httpx.AsyncClient, cp: RunningControlPlane, github: GitHubFake
) -> None:
    await protect(http, users=["alice"])
    made = await http.post(
        "/api/v1/oauth/clients/",
        json={
            "client_name": "machine",
            "redirect_uris": ["https://app.example/cb"],
            "allow_client_credentials": True,
        },
        headers=ADMIN,
    )
    machine_id, machine_secret = made.json()["client_id"], made.json()["client_secret"]
    granted = await http.post(
        "/token",
        data={"grant_type": "client_credentials", "resource": RESOURCE},
        auth=(machine_id, machine_secret),
    )
    assert granted.status_code == 200, granted.text
    entry = _one(await events(http, ADMIN, event="allowlist_denied"), client_id=machine_id)
    assert entry["login"] == "" and entry["grant_type"] == "client_credentials"
    assert f"OAuth client {machine_id!r} is not among the allowed clients" in entry["reason"]
    # Once the proxy admits the client, its next token records nothing more.
    admit = {"allowed_users": ["alice"], "allowed_clients": [machine_id]}
    assert (
        await http.put(f"/api/v1/proxy/targets/{MCP_HOST}/auth", json=admit, headers=ADMIN)
    ).status_code == 200
    again = await http.post(
        "/token",
        data={"grant_type": "client_credentials", "resource": RESOURCE},
        auth=(machine_id, machine_secret),
    )
    assert again.status_code == 200
    assert len(await events(http, ADMIN, event="allowlist_denied")) == 1

    # Device logins: the start is an event (success, and a refusal with its reason), and bob's token
    # for the protected resource is recorded as one the allowlist refuses.
    started = await http.post("/device/code", data={"client_id": CLI_CLIENT_ID, "resource": RESOURCE})
    assert started.status_code == 200, started.text
    dcr = await register(http)
    refused = await http.post("/device/code", data={"client_id": dcr.client_id})
    assert refused.status_code == 400
    starts = await events(http, ADMIN, event="device_authorization")
    ok_start = _one(starts, outcome="success")
    assert ok_start["client_id"] == CLI_CLIENT_ID and ok_start["resources"] == [RESOURCE]
    assert ok_start["grant_type"] == "device_code"
    failed_start = _one(starts, outcome="failure")
    assert failed_start["client_id"] == dcr.client_id
    assert failed_start["reason"].startswith("unauthorized_client")
    github.approve_device(started.json()["user_code"], "bob")
    polled = await http.post(
        "/device/token",
        data={
            "grant_type": DEVICE_GRANT,
            "device_code": started.json()["device_code"],
            "client_id": CLI_CLIENT_ID,
        },
    )
    assert polled.status_code == 200, polled.text
    device_denied = _one(await events(http, ADMIN, event="allowlist_denied"), login="bob")
    assert device_denied["grant_type"] == "device_code" and device_denied["client_id"] == CLI_CLIENT_ID


async def test_registrations_documents_and_introspection_are_recorded_without_secrets(
    http: httpx.AsyncClient,
    cp: RunningControlPlane,
    github: GitHubFake,
    documents: DocumentServer,
    redis_client: aioredis.Redis,
) -> None:
    await protect(http, users=["alice"])
    secrets_used: list[str] = [ADMIN_TOKEN]

    # DCR: a confidential registration, a refused one, its RFC 7592 update and deletion (and a refused one).
    client = await register(
        http, auth_method="client_secret_post", redirect_uris=[REDIRECT_URI], name="Audited app"
    )
    registration_token = client.registration["registration_access_token"]
    secrets_used += [client.secret, registration_token]
    bad = await http.post("/register", json={"redirect_uris": ["http://evil.example/cb"]})
    assert bad.status_code == 400
    management = {"Authorization": f"Bearer {registration_token}"}
    updated = await http.put(
        f"/register/{client.client_id}",
        json={
            "client_id": client.client_id,
            "client_secret": client.secret,
            "redirect_uris": [REDIRECT_URI, "https://app.example.org/cb"],
            "client_name": "Audited app 2",
            "token_endpoint_auth_method": "client_secret_post",
            "grant_types": ["authorization_code", "refresh_token"],
        },
        headers=management,
    )
    assert updated.status_code == 200, updated.text
    wrong = await http.delete(f"/register/{client.client_id}", headers=bearer("not-the-registration-token"))
    assert wrong.status_code == 401
    secrets_used.append("not-the-registration-token")

    registered = _one(await events(http, ADMIN, event="client_registered"), outcome="success")
    assert registered["client_id"] == client.client_id
    assert registered["detail"] == "name='Audited app' redirect_hosts=127.0.0.1"
    refused = _one(await events(http, ADMIN, event="client_registered"), outcome="failure")
    assert refused["reason"].startswith("invalid_redirect_uri") and refused["client_id"] == ""
    changed = _one(await events(http, ADMIN, event="client_updated"), outcome="success")
    assert changed["detail"] == "name='Audited app 2' redirect_hosts=127.0.0.1,app.example.org"
    refused_delete = _one(await events(http, ADMIN, event="client_deleted"), outcome="failure")
    assert refused_delete["client_id"] == client.client_id and refused_delete["reason"]

    # A user's tokens, then introspection: by the client that owns them, of garbage, and with a bad secret.
    github.next_login = "alice"
    result = await login(Browser(http), client, resource=RESOURCE)
    secrets_used += [result.code, result.verifier]
    redeemed = await redeem(http, client, result, client_secret=client.secret)
    assert redeemed.status_code == 200, redeemed.text
    tokens = redeemed.json()
    secrets_used += [tokens["access_token"], tokens["refresh_token"]]
    own = {"client_id": client.client_id, "client_secret": client.secret}
    active = await http.post("/introspect", data={"token": tokens["access_token"], **own})
    assert active.json()["active"] is True
    inactive = await http.post("/introspect", data={"token": "garbage-token-0451", **own})
    assert inactive.json() == {"active": False}
    bad_secret = await http.post(
        "/introspect",
        data={"token": tokens["access_token"], "client_id": client.client_id, "client_secret": "nope-4242"},
    )
    assert bad_secret.status_code == 401
    secrets_used += ["garbage-token-0451", "nope-4242"]
    introspected = await events(http, ADMIN, event="token_introspected")
    answered = _one(introspected, outcome="success")
    assert answered["login"] == "alice" and answered["client_id"] == client.client_id
    assert answered["resources"] == [RESOURCE]
    reasons = sorted(e["reason"].split(":")[0] for e in introspected if e["outcome"] == "failure")
    assert reasons == ["inactive", "invalid_client"], introspected

    deleted = await http.delete(f"/register/{client.client_id}", headers=management)
    assert deleted.status_code == 204
    assert _one(await events(http, ADMIN, event="client_deleted"), outcome="success")["client_id"] == (
        client.client_id
    )

    # Client ID Metadata Documents: one fetch recorded (then cached), and a refusal with the rule it broke.
    good_id = f"{documents.base_url}/clients/audited.json"
    documents.documents["/clients/audited.json"] = (
        {"client_id": good_id, "client_name": "Hosted", "redirect_uris": [REDIRECT_URI]},
        {"Cache-Control": "max-age=120"},
    )
    hosted = Client(good_id, {})
    first = await login(Browser(http), hosted, resource=RESOURCE)
    secrets_used += [first.code, first.verifier]
    assert (await redeem(http, hosted, first)).status_code == 200
    impostor_id = f"{documents.base_url}/clients/audited-impostor.json"
    documents.documents["/clients/audited-impostor.json"] = (
        {"client_id": "https://someone-else.example/c.json", "redirect_uris": [REDIRECT_URI]},
        {},
    )
    refused_page = await http.get(f"/authorize?client_id={impostor_id}&response_type=code")
    assert refused_page.status_code == 400
    fetched = await events(http, ADMIN, event="client_metadata_fetched")
    good = _one(fetched, outcome="success")
    assert good["client_id"] == good_id and good["detail"] == "name='Hosted' redirect_hosts=127.0.0.1"
    impostor = _one(fetched, outcome="failure")
    assert impostor["client_id"] == impostor_id
    assert "its client_id does not equal the URL it was fetched from" in impostor["reason"]

    # A device login's codes never reach the audit either.
    started = (await http.post("/device/code", data={"client_id": CLI_CLIENT_ID})).json()
    secrets_used += [started["device_code"], started["user_code"]]

    # `mhp logs oauth` finds them by event and outcome.
    table = ok(run(cp, "logs", "oauth", "--event", "client_metadata_fetched", "--outcome", "failure"))
    assert "DETAIL" in table and "client_metadata_fetched" in table and "failure" in table
    shown = json.loads(
        ok(run(cp, "logs", "oauth", "--event", "client_metadata_fetched", "--outcome", "failure", "--json"))
    )
    assert [e["client_id"] for e in shown] == [impostor_id]
    listed = json.loads(ok(run(cp, "logs", "oauth", "--event", "client_registered", "--json")))
    assert {e["outcome"] for e in listed} == {"success", "failure"}

    stored = json.dumps(
        [
            await redis_client.xrange(keys.audit_oauth_stream()),
            await redis_client.xrange(keys.audit_changes_stream()),
        ]
    )
    for secret in secrets_used:
        assert secret, "a secret the test meant to check is empty"
        assert secret not in stored, f"an audit entry holds a secret: {secret[:12]}..."
