"""Tokens the authorization server would never issue, signed with its real active key, for tests of the
checks that must refuse them anyway (a management-API token held by a self-registered client, say).

The key is read the way an insider holding Redis and the KEK could: the ring in Redis, decrypted with the
control plane's KEY_ENCRYPTION_KEY_B64. A rotation first makes sure the ring is in Redis (tests flush it)
and that every replica signs with, and verifies against, exactly that key."""

from __future__ import annotations

import secrets
import time

import httpx
import redis.asyncio as aioredis

from control_plane.oauth.key_ring import signing_key_context
from control_plane.oauth.signing import SigningKeys
from control_plane.records import OAuthSigningKeyRing
from shared import keys
from shared.encryption import Keyring
from tests.control_plane.conftest import ADMIN, RunningControlPlane


async def active_signing_keys(
    cp: RunningControlPlane, http: httpx.AsyncClient, redis_client: aioredis.Redis
) -> SigningKeys:
    rotated = await http.post(
        "/api/v1/oauth/keys/rotate", json={"retire_previous_after_seconds": 0}, headers=ADMIN
    )
    assert rotated.status_code == 200, rotated.text
    ring = OAuthSigningKeyRing.model_validate_json(await redis_client.get(keys.oauth_signing_keys()))
    active = next(key for key in ring.keys if key.kid == ring.active_kid)
    kek = Keyring.from_keys_b64(cp.env["KEY_ENCRYPTION_KEY_B64"])
    pem = kek.decrypt(active.private_key_encrypted, context=signing_key_context(active.kid))
    return SigningKeys.from_pems(pem)


def management_token(cp: RunningControlPlane, signer: SigningKeys, *, client_id: str, login: str) -> str:
    """An access token for the management API (audience = the issuer) as our server shapes them."""
    now = int(time.time())
    return signer.sign(
        {
            "iss": cp.url,
            "sub": f"github:{login}",
            "aud": [cp.url],
            "exp": now + 600,
            "iat": now,
            "jti": secrets.token_urlsafe(12),
            "scope": "mcp",
            "client_id": client_id,
            "login": login,
        }
    )
