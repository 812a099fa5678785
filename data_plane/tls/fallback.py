"""The self-signed fallback certificate, served when a client sends no SNI or a name we have no cert for.

Generated once by whichever replica needs it first and stored in Redis (`SET NX`, key encrypted), so every
replica serves the same certificate; a replica that loses the race uses the winner's.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from pydantic import ValidationError

from data_plane.tls.self_signed import self_signed_pem
from shared import keys
from shared.config import Settings
from shared.encryption import FALLBACK_KEY_CONTEXT, Keyring
from shared.models import FallbackCertificate

VALIDITY_DAYS = 3650


def generate_fallback(common_name: str, keyring: Keyring) -> FallbackCertificate:
    cert_pem, key_pem = self_signed_pem(common_name, valid_days=VALIDITY_DAYS)
    return FallbackCertificate(
        common_name=common_name,
        cert_pem=cert_pem.decode("ascii"),
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
