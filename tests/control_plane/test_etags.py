"""ETag / If-Match on the management API, end to end over the real app and Redis: for each object kind with
writes, a GET's ETag lets the write through and comes back changed, a stale one is refused with 412 and
leaves the object as it was, `*` matches any existing object, and no If-Match keeps the old behaviour."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from control_plane.oauth.consent import consent_id
from control_plane.oauth.state_store import OAuthState
from control_plane.records import OAuthConsent

from .conftest import ADMIN, bearer, create_token

PROXIES = "/api/v1/proxy/targets/"
HOST = "etag.example.com"


@dataclass(frozen=True)
class Kind:
    """One object kind: how to create it, where it lives, and a change to write (PUT or PATCH body)."""

    name: str
    create: Callable[[httpx.AsyncClient], Awaitable[None]]
    url: str
    method: str
    change: Callable[[int], dict[str, Any]]
    field: str  # a field of the GET answer that the change sets to the number it was given
    can_delete: bool = True


async def _proxy(api: httpx.AsyncClient) -> None:
    response = await api.post(
        PROXIES,
        json={"hostname": HOST, "target_url": "http://127.0.0.1:9", "enable_https": False},
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text


async def _route(api: httpx.AsyncClient) -> None:
    body = {"id": "r-etag", "path_pattern": "/api", "target_url": "http://127.0.0.1:9"}
    response = await api.post("/api/v1/routes/", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text


async def _token(api: httpx.AsyncClient) -> None:
    await create_token(api, "etag-tenant")


async def _auth(api: httpx.AsyncClient) -> None:
    await _proxy(api)
    response = await api.put(f"{PROXIES}{HOST}/auth", json={"allowed_users": ["alice"]}, headers=ADMIN)
    assert response.status_code == 200, response.text


async def _resource(api: httpx.AsyncClient) -> None:
    await _proxy(api)
    response = await api.put(f"{PROXIES}{HOST}/resource", json={"path": "/mcp"}, headers=ADMIN)
    assert response.status_code == 200, response.text


async def _external(api: httpx.AsyncClient) -> None:
    body = {"name": "billing", "url": "http://127.0.0.1:9/v1"}
    response = await api.post("/api/v1/services/external/", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text


KINDS = [
    Kind(
        "proxy",
        _proxy,
        PROXIES + HOST,
        "PATCH",
        lambda n: {"read_timeout_seconds": n},
        "read_timeout_seconds",
    ),
    Kind(
        "proxy-put",
        _proxy,
        PROXIES + HOST,
        "PUT",
        lambda n: {"target_url": "http://127.0.0.1:9", "read_timeout_seconds": n, "enable_https": False},
        "read_timeout_seconds",
    ),
    Kind(
        "route",
        _route,
        "/api/v1/routes/r-etag",
        "PUT",
        lambda n: {"path_pattern": "/api", "target_url": "http://127.0.0.1:9", "priority": n},
        "priority",
    ),
    Kind(
        "token",
        _token,
        "/api/v1/tokens/etag-tenant",
        "PUT",
        lambda n: {"cert_email": f"ops{n}@example.com"},
        "cert_email",
    ),
    Kind(
        "auth",
        _auth,
        f"{PROXIES}{HOST}/auth",
        "PUT",
        lambda n: {"allowed_users": [f"user{n}"]},
        "allowed_users",
    ),
    Kind(
        "resource",
        _resource,
        f"{PROXIES}{HOST}/resource",
        "PUT",
        lambda n: {"path": "/mcp", "resource_name": f"tools {n}"},
        "resource_name",
        can_delete=False,
    ),
    Kind(
        "external-service",
        _external,
        "/api/v1/services/external/billing",
        "PUT",
        lambda n: {"url": f"http://127.0.0.1:9/v{n}"},
        "url",
    ),
]


def _expected(kind: Kind, n: int) -> Any:
    return kind.change(n)[kind.field]


@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
async def test_a_stale_if_match_is_refused_and_a_fresh_one_passes(api: httpx.AsyncClient, kind: Kind) -> None:
    await kind.create(api)
    first = await api.get(kind.url, headers=ADMIN)
    assert first.status_code == 200
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) == 66  # strong, sha256

    # Someone else writes in between (no If-Match: today's behaviour).
    other = await api.request(kind.method, kind.url, json=kind.change(1), headers=ADMIN)
    assert other.status_code == 200, other.text
    moved = other.headers["etag"]
    assert moved != etag

    stale = await api.request(kind.method, kind.url, json=kind.change(2), headers={**ADMIN, "If-Match": etag})
    assert stale.status_code == 412, stale.text
    assert "changed by someone else" in stale.json()["detail"]
    after = await api.get(kind.url, headers=ADMIN)
    assert after.json()[kind.field] == _expected(kind, 1)
    assert after.headers["etag"] == moved  # the write answer's ETag is what a GET now says

    fresh = await api.request(
        kind.method, kind.url, json=kind.change(3), headers={**ADMIN, "If-Match": moved}
    )
    assert fresh.status_code == 200, fresh.text
    assert fresh.json()[kind.field] == _expected(kind, 3)
    assert (await api.get(kind.url, headers=ADMIN)).headers["etag"] == fresh.headers["etag"] != moved

    anything = await api.request(
        kind.method, kind.url, json=kind.change(4), headers={**ADMIN, "If-Match": "*"}
    )
    assert anything.status_code == 200, anything.text
    listed = await api.request(
        kind.method,
        kind.url,
        json=kind.change(5),
        headers={**ADMIN, "If-Match": f'"x", {anything.headers["etag"]}'},
    )
    assert listed.status_code == 200, listed.text

    if kind.can_delete:
        current = (await api.get(kind.url, headers=ADMIN)).headers["etag"]
        refused = await api.delete(kind.url, headers={**ADMIN, "If-Match": etag})
        assert refused.status_code == 412
        assert (await api.get(kind.url, headers=ADMIN)).status_code == 200
        deleted = await api.delete(kind.url, headers={**ADMIN, "If-Match": current})
        assert deleted.status_code == 204, deleted.text
        assert (await api.get(kind.url, headers=ADMIN)).status_code == 404


async def test_weak_and_garbage_tags_never_match(api: httpx.AsyncClient) -> None:
    await _proxy(api)
    etag = (await api.get(PROXIES + HOST, headers=ADMIN)).headers["etag"]
    for value in (f"W/{etag}", "garbage", '""', etag.strip('"')):
        response = await api.patch(
            PROXIES + HOST, json={"enabled": False}, headers={**ADMIN, "If-Match": value}
        )
        assert response.status_code == 412, (value, response.text)
    assert (await api.get(PROXIES + HOST, headers=ADMIN)).json()["enabled"] is True


async def test_a_no_op_service_style_write_and_tenant_writes_carry_etags(api: httpx.AsyncClient) -> None:
    """An ordinary token gets the same ETags on its own objects, and its writes answer with the new one."""
    tenant = bearer(await create_token(api, "tenant"))
    body = {"hostname": "t.example.com", "target_url": "https://93.184.215.14", "enable_https": False}
    created = await api.post(PROXIES, json=body, headers=tenant)
    assert created.status_code == 201, created.text
    assert (
        created.headers["etag"] == (await api.get(PROXIES + "t.example.com", headers=tenant)).headers["etag"]
    )
    put_token = await api.put("/api/v1/tokens/tenant", json={"cert_email": "a@example.com"}, headers=tenant)
    assert (
        put_token.headers["etag"] == (await api.get("/api/v1/tokens/tenant", headers=ADMIN)).headers["etag"]
    )


async def test_certificate_writes_honour_if_match(api: httpx.AsyncClient) -> None:
    body = {"cert_name": "etag-cert", "domains": ["cert.example.com"], "environment": "staging"}
    created = await api.post("/api/v1/certificates/", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    url = "/api/v1/certificates/etag-cert"
    etag = (await api.get(url, headers=ADMIN)).headers["etag"]
    assert created.headers["etag"] == etag
    renewed = await api.post(url + "/renew", headers={**ADMIN, "If-Match": etag})
    assert renewed.status_code == 202, renewed.text
    assert renewed.headers["etag"] != etag
    stale = await api.post(url + "/convert-to-production", headers={**ADMIN, "If-Match": etag})
    assert stale.status_code == 412
    assert (await api.get(url, headers=ADMIN)).json()["environment"] == "staging"
    assert (await api.delete(url, headers={**ADMIN, "If-Match": etag})).status_code == 412
    assert (await api.delete(url, headers={**ADMIN, "If-Match": renewed.headers["etag"]})).status_code == 204


async def test_if_match_on_a_missing_object_is_404_and_a_refused_write_is_not_412(
    api: httpx.AsyncClient,
) -> None:
    missing = await api.patch(
        PROXIES + "nope.example.com", json={"enabled": False}, headers={**ADMIN, "If-Match": "*"}
    )
    assert missing.status_code == 404
    await _proxy(api)
    etag = (await api.get(PROXIES + HOST, headers=ADMIN)).headers["etag"]
    bad = await api.patch(PROXIES + HOST, json={"no_such_field": 1}, headers={**ADMIN, "If-Match": etag})
    assert bad.status_code == 422
    assert (await api.get(PROXIES + HOST, headers=ADMIN)).headers["etag"] == etag


async def test_concurrent_writes_with_the_same_etag_let_exactly_one_through(api: httpx.AsyncClient) -> None:
    import asyncio

    await _proxy(api)
    etag = (await api.get(PROXIES + HOST, headers=ADMIN)).headers["etag"]
    answers = await asyncio.gather(
        *(
            api.patch(
                PROXIES + HOST, json={"read_timeout_seconds": 10 + i}, headers={**ADMIN, "If-Match": etag}
            )
            for i in range(6)
        )
    )
    assert sorted(a.status_code for a in answers) == [200] + [412] * 5


@pytest.mark.parametrize("if_match", ['"not-the-tag"', "*"])
async def test_another_tokens_if_match_gets_403_never_412(api: httpx.AsyncClient, if_match: str) -> None:
    """Ownership is judged before the precondition: a 412 would tell another tenant the object exists and
    let it probe its ETag."""
    owner = bearer(await create_token(api, "etag-owner"))
    stranger = bearer(await create_token(api, "etag-stranger"))
    body = {"hostname": "owned.example.com", "target_url": "http://93.184.216.34"}
    assert (await api.post(PROXIES, json=body, headers=owner)).status_code == 201
    url = PROXIES + "owned.example.com"
    replacement = {"target_url": "http://93.184.216.34"}
    for method, payload in (("PUT", replacement), ("PATCH", {"enabled": False}), ("DELETE", None)):
        answer = await api.request(method, url, json=payload, headers={**stranger, "If-Match": if_match})
        assert answer.status_code == 403, (method, answer.status_code, answer.text)
        assert "etag" not in answer.headers
    assert (await api.get(url, headers=owner)).json()["enabled"] is True


async def _consent(redis_client: aioredis.Redis, login: str = "alice", scope: str = "mcp") -> str:
    """A remembered consent, as the consent page leaves one (approving the same sets again replaces it)."""
    now = time.time()
    record = OAuthConsent(
        consent_id=consent_id(login, "etag-client", [scope], ["https://mcp.example.com"]),
        login=login,
        client_id="etag-client",
        client_name="etag",
        scopes=[scope],
        resources=["https://mcp.example.com"],
        created_at=now,
        expires_at=now + 3600,
    )
    await OAuthState(redis_client).put_consent(record)
    return record.consent_id


async def _delete_only_kind(
    api: httpx.AsyncClient, url: str, recreate: Callable[[], Awaitable[None]], headers: dict[str, str]
) -> None:
    """An object with only DELETE: a tag read before the object was deleted and made again is stale (412,
    nothing deleted); the current tag, or `*`, deletes it; a tag on a missing object is 404."""
    first = await api.get(url, headers=headers)
    assert first.status_code == 200, first.text
    stale = first.headers["etag"]
    assert stale.startswith('"') and len(stale) == 66
    assert (await api.delete(url, headers=headers)).status_code == 204  # no If-Match: as before
    await recreate()
    current = (await api.get(url, headers=headers)).headers["etag"]
    assert current != stale
    refused = await api.delete(url, headers={**headers, "If-Match": stale})
    assert refused.status_code == 412, refused.text
    assert "changed by someone else" in refused.json()["detail"]
    assert (await api.get(url, headers=headers)).headers["etag"] == current
    weak = await api.delete(url, headers={**headers, "If-Match": f"W/{current}"})
    assert weak.status_code == 412
    deleted = await api.delete(url, headers={**headers, "If-Match": f'"x", {current}'})
    assert deleted.status_code == 204, deleted.text
    assert (await api.get(url, headers=headers)).status_code == 404
    assert (await api.delete(url, headers={**headers, "If-Match": "*"})).status_code == 404
    await recreate()
    assert (await api.delete(url, headers={**headers, "If-Match": "*"})).status_code == 204


async def test_port_release_honours_if_match(api: httpx.AsyncClient) -> None:
    tenant = bearer(await create_token(api, "port-owner"))
    port = (await api.post("/api/v1/ports/", json={"purpose": "etag"}, headers=tenant)).json()["port"]

    async def allocate_again() -> None:
        body = {"port": port, "purpose": "etag again"}
        answer = await api.post("/api/v1/ports/", json=body, headers=tenant)
        assert answer.status_code == 201, answer.text

    await _delete_only_kind(api, f"/api/v1/ports/{port}", allocate_again, tenant)


async def test_oauth_client_delete_honours_if_match(api: httpx.AsyncClient) -> None:
    body = {"client_name": "etag app", "redirect_uris": ["https://app.example/cb"]}
    made = await api.post("/api/v1/oauth/clients/", json=body, headers=ADMIN)
    assert made.status_code == 201, made.text
    url = "/api/v1/oauth/clients/" + made.json()["client_id"]
    view = await api.get(url, headers=ADMIN)
    assert "client_secret" not in view.json() and "client_secret_sha256" not in view.json()
    etag = view.headers["etag"]

    # A client deleted and registered again is another client (another id): the old tag cannot match it.
    refused = await api.delete(url, headers={**ADMIN, "If-Match": '"0' + etag[2:]})
    assert refused.status_code == 412, refused.text
    assert (await api.get(url, headers=ADMIN)).status_code == 200
    deleted = await api.delete(url, headers={**ADMIN, "If-Match": etag})
    assert deleted.status_code == 204, deleted.text
    assert (await api.get(url, headers=ADMIN)).status_code == 404
    assert (await api.delete(url, headers={**ADMIN, "If-Match": "*"})).status_code == 404


async def test_consent_revocation_honours_if_match(
    api: httpx.AsyncClient, redis_client: aioredis.Redis
) -> None:
    record_id = await _consent(redis_client)

    async def approve_again() -> None:
        assert await _consent(redis_client) == record_id  # the same sets: the same id, a renewed record

    await _delete_only_kind(api, f"/api/v1/oauth/consents/{record_id}", approve_again, ADMIN)
    listed = await api.get("/api/v1/oauth/consents/", headers=ADMIN)
    assert listed.json() == []


@pytest.mark.parametrize("if_match", ['"not-the-tag"', "*"])
async def test_another_tokens_if_match_on_ports_clients_and_consents_is_403_never_412(
    api: httpx.AsyncClient, redis_client: aioredis.Redis, if_match: str
) -> None:
    owner = bearer(await create_token(api, "port-holder"))
    stranger = bearer(await create_token(api, "port-stranger"))
    port = (await api.post("/api/v1/ports/", json={"purpose": "mine"}, headers=owner)).json()["port"]
    made = await api.post(
        "/api/v1/oauth/clients/",
        json={"client_name": "admin's", "redirect_uris": ["https://app.example/cb"]},
        headers=ADMIN,
    )
    record_id = await _consent(redis_client)
    urls = [
        f"/api/v1/ports/{port}",
        "/api/v1/oauth/clients/" + made.json()["client_id"],
        f"/api/v1/oauth/consents/{record_id}",
    ]
    for url in urls:
        for method in ("GET", "DELETE"):
            answer = await api.request(method, url, headers={**stranger, "If-Match": if_match})
            assert answer.status_code == 403, (method, url, answer.status_code, answer.text)
            assert "etag" not in answer.headers
        assert (await api.get(url, headers=ADMIN)).status_code == 200
