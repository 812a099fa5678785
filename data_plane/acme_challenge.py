"""Answer ACME HTTP-01 challenges: `GET /.well-known/acme-challenge/<token>` on any host, from Redis.

The control plane writes each key-authorisation to `{mhp}:acme-challenge:<token>` with a TTL, so whichever
data-plane replica the CA reaches can answer. The connection code calls `challenge_token` on every plain-HTTP
request path *before* routing and auth; a token outside the base64url alphabet is refused without touching
Redis (it can never be a real token, and it must not be able to spell another key).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import redis.asyncio as aioredis

from shared import keys

CHALLENGE_PATH_PREFIX = "/.well-known/acme-challenge/"
# RFC 8555 section 8.3: a token is base64url without padding, at least 128 bits of entropy (22 chars).
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,512}")


@dataclass(frozen=True, slots=True)
class ChallengeAnswer:
    status: int
    body: bytes
    content_type: str = "text/plain"


NOT_FOUND = ChallengeAnswer(404, b"no such ACME challenge\n")


def is_challenge_path(target: str) -> bool:
    """True for any request target under /.well-known/acme-challenge/ (query ignored)."""
    return target.split("?", 1)[0].startswith(CHALLENGE_PATH_PREFIX)


def challenge_token(target: str) -> str | None:
    """The token of a challenge request target, or None when it is not a well-formed challenge path."""
    path = target.split("?", 1)[0]
    if not path.startswith(CHALLENGE_PATH_PREFIX):
        return None
    token = path[len(CHALLENGE_PATH_PREFIX) :]
    return token if _TOKEN.fullmatch(token) else None


async def answer_challenge(redis: aioredis.Redis, target: str) -> ChallengeAnswer:
    """200 with the key-authorisation, or 404 (unknown, expired or malformed token)."""
    token = challenge_token(target)
    if token is None:
        return NOT_FOUND
    value = await redis.get(keys.acme_challenge(token))
    if value is None:
        return NOT_FOUND
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    return ChallengeAnswer(200, text.encode("ascii", "replace"))
