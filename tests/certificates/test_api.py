"""`/api/v1/certificates/`: validation (422), uniqueness of names and domains (409), ownership, the workflow
event each request queues, cascade on token deletion, and that no response ever carries a private key.
The background worker is off here: these tests are about the API and what it stores."""

from __future__ import annotations

import httpx
import pytest
import redis.asyncio as aioredis

from shared import keys
from shared.models import Certificate

from .conftest import ADMIN, CERTS

pytestmark = pytest.mark.certificates


async def create_token(api: httpx.AsyncClient, name: str, cert_email: str = "") -> dict[str, str]:
    response = await api.post("/api/v1/tokens/", json={"name": name, "cert_email": cert_email}, headers=ADMIN)
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


async def workflow_events(redis: aioredis.Redis) -> list[dict[str, str]]:
    return [fields for _id, fields in await redis.xrange(keys.acme_workflow_stream())]


async def test_create_stores_pending_and_queues_one_event(
    api: httpx.AsyncClient, redis_client: aioredis.Redis
) -> None:
    response = await api.post(
        CERTS,
        json={
            "cert_name": "shop",
            "domains": ["Shop.Example.com.", "www.shop.example.com"],
            "environment": "staging",
        },
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["domains"] == ["shop.example.com", "www.shop.example.com"]
    assert body["status"] == "pending" and body["owner"] == "admin" and body["environment"] == "staging"
    assert body["email"] == "ops@example.com"  # ACME_EMAIL, as the admin has no token email
    assert "private_key_encrypted" not in body

    stored = Certificate.model_validate_json(await redis_client.hget(keys.certificates(), "shop"))
    assert stored.directory_url.endswith("/dir")
    assert await redis_client.hgetall(keys.certificate_domains()) == {
        "shop.example.com": "shop",
        "www.shop.example.com": "shop",
    }
    events = await workflow_events(redis_client)
    assert [(e["reason"], e["cert_name"]) for e in events] == [("created", "shop")]
    assert (await api.get(f"{CERTS}shop/status", headers=ADMIN)).json()["status"] == "pending"
    listed = (await api.get(CERTS, headers=ADMIN)).json()
    assert [c["cert_name"] for c in listed] == ["shop"]


@pytest.mark.parametrize(
    "payload",
    [
        {"cert_name": "w", "domains": ["*.example.com"]},
        {"cert_name": "w", "domains": ["ok.example.com", "*.example.com"]},
        {"cert_name": "w", "domains": ["bad..example.com"]},
        {"cert_name": "w", "domains": ["under_score.example.com"]},
        {"cert_name": "w", "domains": []},
        {"cert_name": "w", "domains": [f"d{i}.example.com" for i in range(101)]},
        {"cert_name": "w", "domains": ["a.example.com", "A.example.com"]},
        {"cert_name": "bad name", "domains": ["a.example.com"]},
        {"cert_name": "w", "domains": ["a.example.com"], "environment": "prod"},
        {"cert_name": "w", "domains": ["a.example.com"], "email": "not-an-email"},
        {"cert_name": "w", "domains": ["a.example.com"], "private_key": "x"},
    ],
)
async def test_invalid_requests_are_422_and_store_nothing(
    api: httpx.AsyncClient, redis_client: aioredis.Redis, payload: dict[str, object]
) -> None:
    response = await api.post(CERTS, json=payload, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], list)
    assert await redis_client.hlen(keys.certificates()) == 0
    assert await workflow_events(redis_client) == []


async def test_wildcard_error_explains_http01(api: httpx.AsyncClient) -> None:
    response = await api.post(CERTS, json={"cert_name": "w", "domains": ["*.example.com"]}, headers=ADMIN)
    assert response.status_code == 422
    assert "wildcard" in response.text and "HTTP-01" in response.text


async def test_a_domain_belongs_to_one_certificate(
    api: httpx.AsyncClient, redis_client: aioredis.Redis
) -> None:
    assert (
        await api.post(CERTS, json={"cert_name": "one", "domains": ["a.example.com"]}, headers=ADMIN)
    ).status_code == 201
    clash = await api.post(
        CERTS, json={"cert_name": "two", "domains": ["b.example.com", "A.EXAMPLE.COM"]}, headers=ADMIN
    )
    assert clash.status_code == 409
    assert "a.example.com" in clash.json()["detail"] and "one" in clash.json()["detail"]
    same_name = await api.post(CERTS, json={"cert_name": "one", "domains": ["c.example.com"]}, headers=ADMIN)
    assert same_name.status_code == 409
    assert await redis_client.hkeys(keys.certificates()) == ["one"]
    assert await redis_client.hgetall(keys.certificate_domains()) == {"a.example.com": "one"}

    # Deleting frees the domain for another certificate.
    assert (await api.delete(f"{CERTS}one", headers=ADMIN)).status_code == 204
    assert await redis_client.hlen(keys.certificate_domains()) == 0
    assert (
        await api.post(CERTS, json={"cert_name": "two", "domains": ["a.example.com"]}, headers=ADMIN)
    ).status_code == 201


async def test_ownership_and_token_email(api: httpx.AsyncClient, redis_client: aioredis.Redis) -> None:
    alice = await create_token(api, "alice", "alice@example.org")
    bob = await create_token(api, "bob")
    # A certificate may name only hostnames the token's own proxies serve.
    for owner, host in ((alice, "alice.example.com"), (bob, "bob.example.com")):
        proxy = {"hostname": host, "target_url": "http://93.184.216.34", "enable_https": False}
        assert (await api.post("/api/v1/proxy/targets/", json=proxy, headers=owner)).status_code == 201
    made = await api.post(
        CERTS, json={"cert_name": "alice-site", "domains": ["alice.example.com"]}, headers=alice
    )
    assert made.status_code == 201
    assert made.json()["owner"] == "alice" and made.json()["email"] == "alice@example.org"
    explicit = await api.post(
        CERTS,
        json={"cert_name": "bob-site", "domains": ["bob.example.com"], "email": "b@example.net"},
        headers=bob,
    )
    assert explicit.json()["email"] == "b@example.net"

    assert [c["cert_name"] for c in (await api.get(CERTS, headers=bob)).json()] == ["bob-site"]
    assert {c["cert_name"] for c in (await api.get(CERTS, headers=ADMIN)).json()} == {
        "alice-site",
        "bob-site",
    }
    for method, path in (
        ("GET", "alice-site"),
        ("GET", "alice-site/status"),
        ("POST", "alice-site/renew"),
        ("POST", "alice-site/convert-to-production"),
        ("DELETE", "alice-site"),
    ):
        assert (await api.request(method, f"{CERTS}{path}", headers=bob)).status_code == 403, path
    assert (await api.get(f"{CERTS}nope", headers=bob)).status_code == 404
    assert (await api.get(CERTS)).status_code == 401

    # Deleting a token deletes its certificates and frees their domains (cascade).
    assert (await api.delete("/api/v1/tokens/alice", headers=ADMIN)).status_code == 204
    assert await redis_client.hkeys(keys.certificates()) == ["bob-site"]
    assert await redis_client.hgetall(keys.certificate_domains()) == {"bob.example.com": "bob-site"}


async def test_renew_and_convert_to_production(api: httpx.AsyncClient, redis_client: aioredis.Redis) -> None:
    await api.post(
        CERTS, json={"cert_name": "s", "domains": ["s.example.com"], "environment": "staging"}, headers=ADMIN
    )
    renewed = await api.post(f"{CERTS}s/renew", headers=ADMIN)
    assert renewed.status_code == 202
    stored = Certificate.model_validate_json(await redis_client.hget(keys.certificates(), "s"))
    assert stored.renew_requested_at is not None

    converted = await api.post(f"{CERTS}s/convert-to-production", headers=ADMIN)
    assert converted.status_code == 202
    assert converted.json()["environment"] == "production" and converted.json()["status"] == "pending"
    again = await api.post(f"{CERTS}s/convert-to-production", headers=ADMIN)
    assert again.status_code == 409
    reasons = [e["reason"] for e in await workflow_events(redis_client)]
    assert reasons == ["created", "renew", "convert"]
    assert (await api.post(f"{CERTS}missing/renew", headers=ADMIN)).status_code == 404


async def test_config_writes_bump_the_version_and_log_changes(
    api: httpx.AsyncClient, redis_client: aioredis.Redis
) -> None:
    # The control plane's own start-up writes (signing keys, the auth host's proxy) may land in between, so
    # the test follows its two writes' events rather than counting versions.
    before = int(await redis_client.get(keys.config_version()) or 0)
    await api.post(CERTS, json={"cert_name": "v", "domains": ["v.example.com"]}, headers=ADMIN)
    await api.delete(f"{CERTS}v", headers=ADMIN)
    changes = [f for _id, f in await redis_client.xrange(keys.changes_stream()) if f["name"] == "v"]
    assert [(c["kind"], c["action"]) for c in changes] == [
        ("certificate", "created"),
        ("certificate", "deleted"),
    ]
    created, deleted = (int(c["version"]) for c in changes)
    assert before < created < deleted <= int(await redis_client.get(keys.config_version()))


async def test_https_proxies_ask_for_a_certificate_through_the_workflow(
    api: httpx.AsyncClient, redis_client: aioredis.Redis
) -> None:
    proxies = "/api/v1/proxy/targets/"
    await api.post(CERTS, json={"cert_name": "covered", "domains": ["covered.example.com"]}, headers=ADMIN)
    for hostname, https in (
        ("covered.example.com", True),  # a certificate already covers it: nothing to ask
        ("plain.example.com", False),
        ("*.wild.example.com", True),  # HTTP-01 cannot validate wildcards
        ("new.example.com", True),
    ):
        response = await api.post(
            proxies,
            json={"hostname": hostname, "target_url": "http://127.0.0.1:9", "enable_https": https},
            headers=ADMIN,
        )
        assert response.status_code == 201, response.text
    # Turning HTTPS on later asks too.
    assert (
        await api.patch(f"{proxies}plain.example.com", json={"enable_https": True}, headers=ADMIN)
    ).status_code == 200
    events = [(e["reason"], e["cert_name"] or e["hostname"]) for e in await workflow_events(redis_client)]
    assert events == [("created", "covered"), ("proxy", "new.example.com"), ("proxy", "plain.example.com")]
    # The request goes through the stream only: no certificate is created inline.
    assert await redis_client.hkeys(keys.certificates()) == ["covered"]
