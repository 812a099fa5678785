"""data_plane.tls: SNI selection (exact, then one-label wildcard, then fallback) with real TLS handshakes on
loopback, the shared fallback certificate, bad rows skipped, context reuse, and the TLS policy."""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl

import pytest
import redis.asyncio as aioredis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from data_plane.tls.cert_store import (
    CertificateStore,
    CertificateTable,
    FallbackMissing,
    load_certificate_table,
)
from data_plane.tls.fallback import ensure_fallback
from shared import keys
from shared.encryption import Keyring, certificate_key_context
from shared.models import Certificate

from .conftest import KEK_B64
from .tls_probe import handshake, tls_server

pytestmark = pytest.mark.certificates

KEYRING = Keyring.from_keys_b64(KEK_B64)
NOW = datetime.datetime.now(datetime.UTC)


class LocalCA:
    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cert-store test CA")])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(hours=1))
            .not_valid_after(NOW + datetime.timedelta(days=10))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def issue(self, name: str, sans: list[str]) -> Certificate:
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, sans[0])]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(hours=1))
            .not_valid_after(NOW + datetime.timedelta(days=5))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return Certificate(
            cert_name=name,
            domains=[s.removeprefix("*.") for s in sans],
            directory_url="https://acme.invalid/dir",
            status="active",
            fullchain_pem=leaf.public_bytes(serialization.Encoding.PEM).decode(),
            private_key_encrypted=KEYRING.encrypt(key_pem, context=certificate_key_context(name)),
            serial=format(leaf.serial_number, "x"),
            fingerprint_sha256=leaf.fingerprint(hashes.SHA256()).hex(),
        )


async def put(redis: aioredis.Redis, *certs: Certificate) -> None:
    for cert in certs:
        await redis.hset(keys.certificates(), cert.cert_name, cert.model_dump_json())


async def table(redis: aioredis.Redis, previous: CertificateTable | None = None) -> CertificateTable:
    await ensure_fallback(redis, KEYRING, "fallback.test.localhost")
    return await load_certificate_table(redis, KEYRING, previous)


async def test_sni_selects_exact_then_wildcard_then_fallback(redis_client: aioredis.Redis) -> None:
    ca = LocalCA()
    exact = ca.issue("exact", ["exact.example.com"])
    wild = ca.issue("wild", ["*.wild.example.com", "wild.example.com"])
    special = ca.issue("special", ["special.wild.example.com"])
    await put(redis_client, exact, wild, special)
    current = await table(redis_client)
    fallback = await ensure_fallback(redis_client, KEYRING, "ignored-when-present")

    async with tls_server(lambda: current, fallback, KEYRING) as port:
        cases = {
            "exact.example.com": exact.serial,
            "x.wild.example.com": wild.serial,
            "wild.example.com": wild.serial,
            "special.wild.example.com": special.serial,  # exact beats the wildcard
        }
        for name, serial in cases.items():
            peer = await handshake(port, name, ca.pem)  # verifying client: chain and hostname must match
            assert peer.serial == serial, name
            assert peer.alpn == "http/1.1"
        for name in ("a.b.wild.example.com", "unknown.example.net", None):
            peer = await handshake(port, name)
            assert peer.common_name == "fallback.test.localhost", name
        with pytest.raises(ssl.SSLCertVerificationError):
            await handshake(port, "unknown.example.net", ca.pem)

    # Matching is case-insensitive and ignores a trailing dot.
    assert current.select("EXACT.Example.COM.") is current.select("exact.example.com")
    assert current.has_certificate_for("exact.example.com")
    assert not current.has_certificate_for("nope.example.com")


async def test_tls_policy_is_tls12_or_newer_with_alpn_http11(redis_client: aioredis.Redis) -> None:
    await put(redis_client, LocalCA().issue("p", ["p.example.com"]))
    current = await table(redis_client)
    for context in (current.select("p.example.com"), current.fallback):
        assert context.minimum_version == ssl.TLSVersion.TLSv1_2
        assert context.options & ssl.OP_NO_COMPRESSION
    fallback = await ensure_fallback(redis_client, KEYRING, "x")
    async with tls_server(lambda: current, fallback, KEYRING) as port:

        def tls12_only_client() -> str | None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            context.maximum_version = ssl.TLSVersion.TLSv1_2
            context.set_alpn_protocols(["h2", "http/1.1"])
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                with context.wrap_socket(raw, server_hostname="p.example.com") as tls:
                    assert tls.version() == "TLSv1.2"
                    return tls.selected_alpn_protocol()

        # A client offering h2 first still gets http/1.1: the only protocol the data plane speaks.
        assert await asyncio.to_thread(tls12_only_client) == "http/1.1"
        assert (await handshake(port, "p.example.com")).version == "TLSv1.3"


async def test_bad_rows_are_skipped_and_never_blank_the_table(redis_client: aioredis.Redis) -> None:
    ca = LocalCA()
    good = ca.issue("good", ["good.example.com"])
    moved_key = ca.issue("moved", ["moved.example.com"])
    # A key encrypted for another certificate does not decrypt here (context binding).
    moved_key = moved_key.model_copy(update={"private_key_encrypted": good.private_key_encrypted})
    other_kek = Keyring.from_keys_b64("A" * 43 + "=")
    foreign = ca.issue("foreign", ["foreign.example.com"])
    foreign = foreign.model_copy(
        update={"private_key_encrypted": other_kek.encrypt(b"x", context=certificate_key_context("foreign"))}
    )
    pending = Certificate(
        cert_name="pending", domains=["pending.example.com"], directory_url="https://a.invalid/"
    )
    await put(redis_client, good, moved_key, foreign, pending)
    await redis_client.hset(keys.certificates(), "garbage", "{not json")

    current = await table(redis_client)
    assert set(current.loaded) == {"good"}
    assert current.has_certificate_for("good.example.com")
    assert not current.has_certificate_for("moved.example.com")


async def test_unchanged_certificates_reuse_their_context(redis_client: aioredis.Redis) -> None:
    ca = LocalCA()
    a, b = ca.issue("a", ["a.example.com"]), ca.issue("b", ["b.example.com"])
    await put(redis_client, a, b)
    first = await table(redis_client)
    b2 = ca.issue("b", ["b.example.com"])
    await put(redis_client, b2)
    second = await table(redis_client, first)
    assert second.select("a.example.com") is first.select("a.example.com")
    assert second.select("b.example.com") is not first.select("b.example.com")
    assert second.fallback is first.fallback


async def test_fallback_is_generated_once_and_shared_by_replicas(
    redis_server, redis_client: aioredis.Redis
) -> None:  # type: ignore[no-untyped-def]
    replicas = [
        aioredis.Redis.from_url(redis_server.url, password=redis_server.password, decode_responses=True)
        for _ in range(4)
    ]
    try:
        results = await asyncio.gather(*(ensure_fallback(r, KEYRING, "fb.example.com") for r in replicas))
    finally:
        for r in replicas:
            await r.aclose()
    assert len({r.cert_pem for r in results}) == 1
    raw = await redis_client.get(keys.fallback_certificate())
    assert "PRIVATE KEY" not in raw and results[0].cert_pem in raw.replace("\\n", "\n")
    # Without a fallback in Redis the loader refuses rather than serving nothing.
    await redis_client.delete(keys.fallback_certificate())
    with pytest.raises(FallbackMissing):
        await load_certificate_table(redis_client, KEYRING)


async def test_certificate_store_swaps_on_refresh_and_keeps_the_last_good_table(
    redis_client: aioredis.Redis,
) -> None:
    ca = LocalCA()
    await put(redis_client, ca.issue("first", ["first.example.com"]))
    certs = CertificateStore(redis_client, KEYRING, "fallback.store.test")
    await certs.start()
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=certs.server_context())
    port = server.sockets[0].getsockname()[1]
    try:
        assert (await handshake(port, "second.example.com")).common_name == "fallback.store.test"
        second = ca.issue("second", ["second.example.com"])
        await put(redis_client, second)
        assert await certs.refresh()
        assert (await handshake(port, "second.example.com", ca.pem)).serial == second.serial

        # A refresh that cannot build a table (here: the fallback vanished) keeps serving the last good one.
        before = certs.current
        await redis_client.delete(keys.fallback_certificate())
        assert not await certs.refresh()
        assert certs.current is before
        assert (await handshake(port, "first.example.com", ca.pem)).common_name == "first.example.com"
    finally:
        server.close()
        await server.wait_closed()
