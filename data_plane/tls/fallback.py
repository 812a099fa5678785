"""The self-signed fallback certificate, served when a client sends no SNI or a name we have no cert for.

Generated once by whichever replica needs it first and stored in Redis (`SET NX`, key encrypted), so every
replica serves the same certificate; a replica that loses the race uses the winner's.
"""

from __future__ import annotations

import datetime

import redis.asyncio as aioredis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from shared import keys
from shared.config import Settings
from shared.encryption import FALLBACK_KEY_CONTEXT, Keyring
from shared.models import FallbackCertificate

VALIDITY_DAYS = 3650


def generate_fallback(common_name: str, keyring: Keyring) -> FallbackCertificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return FallbackCertificate(
        common_name=common_name,
        cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        private_key_encrypted=keyring.encrypt(key_pem, context=FALLBACK_KEY_CONTEXT),
    )


def parse_fallback(raw: str | bytes | None) -> FallbackCertificate | None:
    if raw is None:
        return None
    try:
        return FallbackCertificate.model_validate_json(raw)
    except ValidationError:
        return None


async def ensure_fallback(redis: aioredis.Redis, keyring: Keyring, common_name: str) -> FallbackCertificate:
    """The shared fallback certificate, creating it when Redis has none (or only an unreadable one)."""
    current = parse_fallback(await redis.get(keys.fallback_certificate()))
    if current is not None:
        return current
    fresh = generate_fallback(common_name, keyring)
    if await redis.set(keys.fallback_certificate(), fresh.model_dump_json(), nx=True):
        return fresh
    winner = parse_fallback(await redis.get(keys.fallback_certificate()))
    if winner is not None:
        return winner
    # The stored value is damaged: replace it rather than serve no TLS at all.
    await redis.set(keys.fallback_certificate(), fresh.model_dump_json())
    return fresh


def fallback_common_name(settings: Settings) -> str:
    """FALLBACK_CERT_COMMON_NAME, else BASE_DOMAIN."""
    return settings.FALLBACK_CERT_COMMON_NAME or settings.BASE_DOMAIN
