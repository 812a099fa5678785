"""ACME accounts: one per (directory URL, email), registered on first use, key stored encrypted in Redis.

Two replicas registering at once each create an account at the CA; HSETNX keeps the first and the loser uses
it (the CA-side orphan is harmless). An account the CA no longer knows (Pebble restarted, account deactivated)
is forgotten and registered again by the issuer.
"""

from __future__ import annotations

import asyncio
import hashlib

import redis.asyncio as aioredis
from acme.client import ClientV2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from josepy import jwk as josepy_jwk

from control_plane.records import AcmeAccount
from shared import keys
from shared.encryption import Keyring, acme_account_key_context

from .order import AcmeEndpoint, call_blocking, open_client, register_account

ACCOUNT_KEY_BITS = 2048


def account_id(directory_url: str, email: str) -> str:
    return hashlib.sha256(f"{directory_url}\n{email.lower()}".encode()).hexdigest()


class AccountStore:
    def __init__(self, redis: aioredis.Redis, keyring: Keyring) -> None:
        self._redis = redis
        self._keyring = keyring

    async def client_for(self, endpoint: AcmeEndpoint, email: str) -> tuple[ClientV2, josepy_jwk.JWK]:
        """An ACME client bound to this (directory, email) account, registering it when new."""
        identifier = account_id(endpoint.directory_url, email)
        raw = await self._redis.hget(keys.acme_accounts(), identifier)
        if raw is not None:
            account = AcmeAccount.model_validate_json(raw)
            key_pem = self._keyring.decrypt(
                account.key_encrypted, context=acme_account_key_context(identifier)
            )
            jwk = josepy_jwk.JWKRSA(key=serialization.load_pem_private_key(key_pem, password=None))
            client = await call_blocking(open_client, endpoint, jwk, account.account_uri)
            return client, jwk
        private_key = await asyncio.to_thread(rsa.generate_private_key, 65537, ACCOUNT_KEY_BITS)
        jwk = josepy_jwk.JWKRSA(key=private_key)
        client = await call_blocking(open_client, endpoint, jwk, None)
        uri: str = await call_blocking(register_account, client, email)
        pem = private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        account = AcmeAccount(
            account_id=identifier,
            directory_url=endpoint.directory_url,
            email=email,
            account_uri=uri,
            key_encrypted=self._keyring.encrypt(pem, context=acme_account_key_context(identifier)),
        )
        if not await self._redis.hsetnx(keys.acme_accounts(), identifier, account.model_dump_json()):
            # Another replica registered first; use its account so every replica shares one.
            return await self.client_for(endpoint, email)
        return client, jwk

    async def forget(self, endpoint: AcmeEndpoint, email: str) -> None:
        await self._redis.hdel(keys.acme_accounts(), account_id(endpoint.directory_url, email))
