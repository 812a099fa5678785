"""End-to-end issuance against a real Pebble CA with real HTTP-01 validation (no mocks).

Pebble validates by fetching http://<domain>:<httpPort>/.well-known/acme-challenge/<token>; its DNS
(challtestsrv) sends every name to 127.0.0.1, where the `responder` fixture answers from Redis through
data_plane.acme_challenge. Issued chains are then served by the data plane's certificate table over real TLS
and verified against Pebble's root.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import redis.asyncio as aioredis
from cryptography import x509
from cryptography.x509 import DNSName
from cryptography.x509.verification import PolicyBuilder, Store

from control_plane.acme.issuer import Issuer, Outcome
from control_plane.acme.scheduler import Scheduler
from control_plane.store import Store as ConfigStore
from data_plane.tls.cert_store import CertificateTable, load_certificate_table
from data_plane.tls.fallback import ensure_fallback
from shared import keys
from shared.config import Settings
from shared.encryption import Keyring
from shared.models import Certificate, FallbackCertificate
from tests.harness.pebble import Pebble
from tests.harness.redis_dump import dump_redis
from tests.harness.services import RedisServer

from .conftest import (
    ADMIN,
    CERTS,
    KEK_B64,
    Responder,
    app_client,
    certificate_settings,
    responder_context,
    wait_for_status,
)
from .tls_probe import OpenConnection, handshake, tls_server

pytestmark = pytest.mark.certificates

KEYRING = Keyring.from_keys_b64(KEK_B64)


async def stored(redis: aioredis.Redis, name: str) -> Certificate:
    raw = await redis.hget(keys.certificates(), name)
    assert raw is not None, f"certificate {name} not in Redis"
    return Certificate.model_validate_json(raw)


def verify_chain(fullchain_pem: str, root_pem: str, domain: str) -> x509.Certificate:
    chain = x509.load_pem_x509_certificates(fullchain_pem.encode())
    root = x509.load_pem_x509_certificate(root_pem.encode())
    verifier = PolicyBuilder().store(Store([root])).build_server_verifier(DNSName(domain))
    verifier.verify(chain[0], chain[1:])  # raises when the chain does not lead to Pebble's root
    return chain[0]


async def table_from_redis(
    redis: aioredis.Redis, previous: CertificateTable | None = None
) -> CertificateTable:
    await ensure_fallback(redis, KEYRING, "fallback.test.localhost")
    return await load_certificate_table(redis, KEYRING, previous)


def issuer_for(settings: Settings, redis: aioredis.Redis) -> Issuer:
    return Issuer(ConfigStore(redis), settings)


async def test_single_domain_issued_through_the_api_and_served_over_tls(
    api_with_worker: httpx.AsyncClient,
    responder: Responder,
    pebble: Pebble,
    redis_client: aioredis.Redis,
) -> None:
    created = await api_with_worker.post(
        CERTS, json={"cert_name": "site", "domains": ["site.example.com"]}, headers=ADMIN
    )
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "pending"

    body = await wait_for_status(api_with_worker, "site", {"active", "failed"})
    assert body["status"] == "active", body["error"]
    assert body["domains"] == ["site.example.com"]
    assert body["serial"] and body["fingerprint_sha256"] and "Pebble" in str(body["issuer"])
    assert "private_key_encrypted" not in body and "PRIVATE KEY" not in str(body)
    assert any(path.startswith("/.well-known/acme-challenge/") for path in responder.requests)

    root = pebble.root_pem()
    leaf = verify_chain(str(body["fullchain_pem"]), root, "site.example.com")
    assert format(leaf.serial_number, "x") == body["serial"]

    status = (await api_with_worker.get(f"{CERTS}site/status", headers=ADMIN)).json()
    assert status["status"] == "active" and status["error"] == "" and status["attempts"] == 0

    # The data plane's table serves it by SNI, and a verifying client accepts it.
    table = await table_from_redis(redis_client)
    async with tls_server(lambda: table, await _fallback(redis_client), KEYRING) as port:
        peer = await handshake(port, "site.example.com", root)
        assert peer.serial == body["serial"]
        assert peer.alpn == "http/1.1"
        unknown = await handshake(port, "nobody.example.com")
        assert unknown.common_name == "fallback.test.localhost"


async def _fallback(redis: aioredis.Redis) -> FallbackCertificate:
    return await ensure_fallback(redis, KEYRING, "fallback.test.localhost")


async def test_multi_domain_certificate_covers_every_name(
    api_with_worker: httpx.AsyncClient, responder: Responder, pebble: Pebble, redis_client: aioredis.Redis
) -> None:
    domains = ["multi.example.com", "www.multi.example.com", "api.multi.example.org"]
    created = await api_with_worker.post(
        CERTS, json={"cert_name": "multi", "domains": domains, "environment": "staging"}, headers=ADMIN
    )
    assert created.status_code == 201, created.text
    body = await wait_for_status(api_with_worker, "multi", {"active", "failed"})
    assert body["status"] == "active", body["error"]
    root = pebble.root_pem()
    for domain in domains:
        verify_chain(str(body["fullchain_pem"]), root, domain)
    table = await table_from_redis(redis_client)
    async with tls_server(lambda: table, await _fallback(redis_client), KEYRING) as port:
        for domain in domains:
            assert (await handshake(port, domain, root)).serial == body["serial"]


async def test_renewal_swaps_the_served_serial_while_an_open_connection_continues(
    api_with_worker: httpx.AsyncClient, responder: Responder, pebble: Pebble, redis_client: aioredis.Redis
) -> None:
    await api_with_worker.post(
        CERTS, json={"cert_name": "renew", "domains": ["renew.example.com"]}, headers=ADMIN
    )
    first = await wait_for_status(api_with_worker, "renew", {"active"})
    root = pebble.root_pem()
    current: list[CertificateTable] = [await table_from_redis(redis_client)]
    async with tls_server(lambda: current[0], await _fallback(redis_client), KEYRING) as port:
        connection = await asyncio.to_thread(OpenConnection, port, "renew.example.com", root)
        try:
            assert format(connection.certificate.serial_number, "x") == first["serial"]

            renewed = await api_with_worker.post(f"{CERTS}renew/renew", headers=ADMIN)
            assert renewed.status_code == 202
            second = await wait_for_status(
                api_with_worker, "renew", {"active"}, serial_not=str(first["serial"])
            )
            assert second["serial"] != first["serial"]
            assert second["not_after"] is not None

            current[0] = await table_from_redis(redis_client, current[0])  # the atomic swap
            assert (await handshake(port, "renew.example.com", root)).serial == second["serial"]
            # The connection opened before the swap still works, on its original certificate.
            assert await asyncio.to_thread(connection.echo, b"still here") == b"still here"
        finally:
            connection.close()


async def test_two_issuers_racing_issue_once(
    cert_settings: Settings,
    api: httpx.AsyncClient,
    responder: Responder,
    redis_server: RedisServer,
    redis_client: aioredis.Redis,
) -> None:
    """Two control planes (separate Redis connections) handle the same event at once: one issues, the
    other waits on the lock, re-reads Redis, and finds nothing to do."""
    await api.post(CERTS, json={"cert_name": "race", "domains": ["race.example.com"]}, headers=ADMIN)
    clients = [
        aioredis.Redis.from_url(redis_server.url, password=redis_server.password, decode_responses=True)
        for _ in range(2)
    ]
    try:
        outcomes = await asyncio.gather(*(issuer_for(cert_settings, c).ensure("race") for c in clients))
    finally:
        for client in clients:
            await client.aclose()
    assert sorted(outcomes) == sorted([Outcome.ISSUED, Outcome.NOT_DUE])
    cert = await stored(redis_client, "race")
    assert cert.status == "active" and cert.attempts == 0
    # Exactly one order reached validation: one challenge fetch per issuance of one domain.
    fetches = [p for p in responder.requests if p.startswith("/.well-known/acme-challenge/")]
    assert len(set(fetches)) <= 1


async def test_unreachable_challenge_fails_with_the_ca_reason_and_backs_off(
    api: httpx.AsyncClient, cert_settings: Settings, redis_client: aioredis.Redis
) -> None:
    # No responder fixture: nothing listens on Pebble's httpPort, so validation cannot connect.
    await api.post(CERTS, json={"cert_name": "dark", "domains": ["dark.example.com"]}, headers=ADMIN)
    issuer = issuer_for(cert_settings, redis_client)
    assert await issuer.ensure("dark") == Outcome.FAILED
    status = (await api.get(f"{CERTS}dark/status", headers=ADMIN)).json()
    assert status["status"] == "failed"
    assert "dark.example.com" in status["error"] and "connection refused" in status["error"].lower()
    assert status["attempts"] == 1
    assert status["next_retry_at"] > time.time() + 3000  # ACME_RETRY_BASE_SECONDS=3600 in these settings
    # Another event before the backoff is over does not start another order.
    assert await issuer.ensure("dark") == Outcome.BACKING_OFF
    assert (await api.get(f"{CERTS}dark/status", headers=ADMIN)).json()["attempts"] == 1
    # No challenge is left behind in Redis.
    assert [k async for k in redis_client.scan_iter(keys.acme_challenge("*"))] == []


async def test_failed_certificate_is_retried_after_backoff_and_recovers(
    redis_server: RedisServer, pebble: Pebble, redis_client: aioredis.Redis
) -> None:
    settings = certificate_settings(redis_server, pebble, ACME_RETRY_BASE_SECONDS=1.0)
    async with app_client(settings) as api:
        await api.post(CERTS, json={"cert_name": "flaky", "domains": ["flaky.example.com"]}, headers=ADMIN)
    issuer = issuer_for(settings, redis_client)
    assert await issuer.ensure("flaky") == Outcome.FAILED
    failed = await stored(redis_client, "flaky")
    assert failed.next_retry_at is not None

    # The retry scan queues the certificate once its backoff is over; the worker then issues it.
    scheduler = Scheduler(ConfigStore(redis_client), renew_before_seconds=issuer.renew_before_seconds)
    await asyncio.sleep(max(0.0, failed.next_retry_at - time.time()))
    assert await scheduler.scan(renewals=False, lock_seconds=0.5) == 1
    entries = await redis_client.xrange(keys.acme_workflow_stream())
    assert entries[-1][1]["reason"] == "retry" and entries[-1][1]["cert_name"] == "flaky"

    async with responder_context(pebble, redis_server):  # the challenge is reachable only now
        assert await issuer.ensure("flaky") == Outcome.ISSUED
    cert = await stored(redis_client, "flaky")
    assert cert.status == "active" and cert.attempts == 0 and cert.next_retry_at is None and cert.error == ""


async def test_restart_never_reissues_a_valid_certificate(
    redis_server: RedisServer, pebble: Pebble, responder: Responder, redis_client: aioredis.Redis
) -> None:
    settings = certificate_settings(redis_server, pebble, ACME_WORKER_ENABLED=True)
    async with app_client(settings) as api:
        await api.post(CERTS, json={"cert_name": "keep", "domains": ["keep.example.com"]}, headers=ADMIN)
        first = await wait_for_status(api, "keep", {"active"})
    version_before = await redis_client.get(keys.config_version())

    # A "restarted" control plane: new app, new worker, the same Redis. Its scans and the stream replay find
    # nothing due.
    async with app_client(settings) as api:
        issuer = issuer_for(settings, redis_client)
        assert await issuer.ensure("keep") == Outcome.NOT_DUE
        scheduler = Scheduler(ConfigStore(redis_client), renew_before_seconds=issuer.renew_before_seconds)
        assert await scheduler.scan(renewals=True, lock_seconds=0.1) == 0
        again = (await api.get(f"{CERTS}keep", headers=ADMIN)).json()
    assert again["serial"] == first["serial"]
    assert await redis_client.get(keys.config_version()) == version_before


async def test_scheduler_renews_certificates_close_to_expiry(
    redis_server: RedisServer, pebble: Pebble, responder: Responder, redis_client: aioredis.Redis
) -> None:
    settings = certificate_settings(redis_server, pebble)
    async with app_client(settings) as api:
        await api.post(CERTS, json={"cert_name": "old", "domains": ["old.example.com"]}, headers=ADMIN)
    assert await issuer_for(settings, redis_client).ensure("old") == Outcome.ISSUED
    first = await stored(redis_client, "old")
    assert first.not_after is not None

    # Renewal window wider than the certificate's remaining life: the daily scan must queue it.
    days_left = (first.not_after - time.time()) / 86400
    wide = certificate_settings(redis_server, pebble, ACME_RENEW_BEFORE_DAYS=days_left + 1)
    issuer = issuer_for(wide, redis_client)
    scheduler = Scheduler(ConfigStore(redis_client), renew_before_seconds=issuer.renew_before_seconds)
    assert await scheduler.scan(renewals=True, lock_seconds=0.5) == 1
    assert await issuer.ensure("old") == Outcome.ISSUED
    assert (await stored(redis_client, "old")).serial != first.serial


async def test_https_proxy_gets_a_certificate_automatically(
    api_with_worker: httpx.AsyncClient, responder: Responder, pebble: Pebble, redis_client: aioredis.Redis
) -> None:
    created = await api_with_worker.post(
        "/api/v1/proxy/targets/",
        json={"hostname": "auto.example.com", "target_url": "http://127.0.0.1:9"},
        headers=ADMIN,
    )
    assert created.status_code == 201, created.text
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while loop.time() < deadline:
        name = await redis_client.hget(keys.certificate_domains(), "auto.example.com")
        if name is not None and (await stored(redis_client, name)).status != "pending":
            break
        await asyncio.sleep(0.2)
    assert name == "auto.example.com"
    cert = await stored(redis_client, name)
    assert cert.status == "active", cert.error
    assert cert.auto and cert.owner == "admin" and cert.email == "ops@example.com"
    verify_chain(cert.fullchain_pem, pebble.root_pem(), "auto.example.com")

    # A proxy without HTTPS asks for nothing.
    plain = await api_with_worker.post(
        "/api/v1/proxy/targets/",
        json={"hostname": "plain.example.com", "target_url": "http://127.0.0.1:9", "enable_https": False},
        headers=ADMIN,
    )
    assert plain.status_code == 201
    assert await redis_client.hget(keys.certificate_domains(), "plain.example.com") is None


async def test_no_plaintext_private_key_anywhere_in_redis(
    api_with_worker: httpx.AsyncClient, responder: Responder, redis_client: aioredis.Redis
) -> None:
    await api_with_worker.post(
        CERTS, json={"cert_name": "scan", "domains": ["scan.example.com"]}, headers=ADMIN
    )
    await wait_for_status(api_with_worker, "scan", {"active"})
    await ensure_fallback(redis_client, KEYRING, "fallback.test.localhost")

    blob = await dump_redis(redis_client)
    assert "BEGIN CERTIFICATE" in blob  # the scan does see the stored certificates
    assert await redis_client.hlen(keys.acme_accounts()) == 1  # and the account with its key
    assert "PRIVATE KEY" not in blob


async def test_convert_to_production_reissues_from_the_production_directory(
    api_with_worker: httpx.AsyncClient, responder: Responder, pebble: Pebble, redis_client: aioredis.Redis
) -> None:
    await api_with_worker.post(
        CERTS,
        json={"cert_name": "stage", "domains": ["stage.example.com"], "environment": "staging"},
        headers=ADMIN,
    )
    staging = await wait_for_status(api_with_worker, "stage", {"active"})
    assert "localhost" in str(staging["directory_url"])
    converted = await api_with_worker.post(f"{CERTS}stage/convert-to-production", headers=ADMIN)
    assert converted.status_code == 202
    production = await wait_for_status(
        api_with_worker, "stage", {"active"}, serial_not=str(staging["serial"])
    )
    assert production["environment"] == "production"
    assert "127.0.0.1" in str(production["directory_url"])
    stored_cert = await stored(redis_client, "stage")
    assert stored_cert.issued_directory_url == stored_cert.directory_url
    # One account per (directory, email): staging and production each registered their own.
    assert await redis_client.hlen(keys.acme_accounts()) == 2


async def test_missing_key_encryption_key_fails_clearly_without_contacting_the_ca(
    redis_server: RedisServer, pebble: Pebble, redis_client: aioredis.Redis, responder: Responder
) -> None:
    settings = certificate_settings(redis_server, pebble, KEY_ENCRYPTION_KEY_B64="")
    async with app_client(settings) as api:
        await api.post(CERTS, json={"cert_name": "nokey", "domains": ["nokey.example.com"]}, headers=ADMIN)
    assert await issuer_for(settings, redis_client).ensure("nokey") == Outcome.FAILED
    cert = await stored(redis_client, "nokey")
    assert cert.status == "failed" and "KEY_ENCRYPTION_KEY_B64 is not set" in cert.error
    assert responder.requests == [] and await redis_client.hlen(keys.acme_accounts()) == 0
