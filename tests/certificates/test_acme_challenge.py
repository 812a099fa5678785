"""data_plane.acme_challenge: which paths are challenges, token validation, and answers from real Redis."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from data_plane.acme_challenge import answer_challenge, challenge_token, is_challenge_path
from shared import keys

pytestmark = pytest.mark.certificates

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"


def test_challenge_paths_and_tokens() -> None:
    assert challenge_token(f"/.well-known/acme-challenge/{TOKEN}") == TOKEN
    assert challenge_token(f"/.well-known/acme-challenge/{TOKEN}?x=1") == TOKEN
    assert is_challenge_path("/.well-known/acme-challenge/whatever/../x")
    assert not is_challenge_path("/.well-known/acme-challengeX/abc")
    assert not is_challenge_path("/index.html")
    for bad in (
        "/.well-known/acme-challenge/",
        "/.well-known/acme-challenge/a/b",
        "/.well-known/acme-challenge/*",
        "/.well-known/acme-challenge/a:b",
        "/.well-known/acme-challenge/%41",
        "/.well-known/acme-challenge/" + "a" * 513,
        "/other",
    ):
        assert challenge_token(bad) is None, bad


async def test_answers_come_from_redis(redis_client: aioredis.Redis) -> None:
    path = f"/.well-known/acme-challenge/{TOKEN}"
    assert (await answer_challenge(redis_client, path)).status == 404
    await redis_client.set(keys.acme_challenge(TOKEN), f"{TOKEN}.thumbprint", ex=60)
    answer = await answer_challenge(redis_client, path)
    assert answer.status == 200 and answer.body == f"{TOKEN}.thumbprint".encode()
    assert answer.content_type == "text/plain"
    # A glob-like token must never reach another key.
    await redis_client.set(keys.acme_challenge("x"), "secret", ex=60)
    assert (await answer_challenge(redis_client, "/.well-known/acme-challenge/*")).status == 404
    await redis_client.delete(keys.acme_challenge(TOKEN))
    assert (await answer_challenge(redis_client, path)).status == 404
