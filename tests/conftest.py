"""Fixtures that start real services. Nothing here mocks anything."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from shared.config import ENV_FILE_VARIABLE, Settings, load_settings
from tests.harness.services import RedisServer, start_redis

# A developer's .env must never leak into tests: every process a test starts gets its settings explicitly.
os.environ[ENV_FILE_VARIABLE] = os.devnull

REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK_TARGETS = "127.0.0.0/8,::1/128"
# Every test talks from 127.0.0.1, hundreds of OAuth requests a minute: one client IP as far as the rate
# limits can tell. The limiter's own tests (tests/control_plane/test_edge_limits.py) turn them back on.
NO_RATE_LIMITS = {
    "RATE_LIMIT_REGISTER": "0",
    "RATE_LIMIT_TOKEN": "0",
    "RATE_LIMIT_INTERACTIVE": "0",
    "RATE_LIMIT_API_AUTH_FAILURES": "0",
}


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.service.stop()


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url, password=redis_server.password, decode_responses=True)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def settings(redis_server: RedisServer) -> Settings:
    """Settings pointing at the test Redis, with a known admin token."""
    return load_settings(
        REDIS_URL=redis_server.url,
        REDIS_PASSWORD=redis_server.password,
        ADMIN_TOKEN="acm_test-admin-token-0123456789abcdefghijklmnop",
        BASE_DOMAIN="test.localhost",
        LOG_LEVEL="DEBUG",
        # Tests run their backends on loopback, as a single-host deployment whose admin allows it would;
        # the SSRF tests set it back to empty (the default) to see ordinary tokens refused.
        ALLOWED_TARGET_CIDRS=LOOPBACK_TARGETS,
        **NO_RATE_LIMITS,
    )
