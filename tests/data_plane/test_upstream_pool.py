"""The upstream keep-alive pool bounds: idle connections expire; at most N idle ones per origin are kept."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.data_plane.backends import HttpBackend
from tests.data_plane.conftest import DataPlane, start_data_plane
from tests.data_plane.helpers import configure, get, proxy_to
from tests.harness.services import RedisServer

pytestmark = pytest.mark.proxy


@pytest.fixture
def pool_plane(redis_sync: redis.Redis, redis_server: RedisServer, tmp_path: Path) -> Iterator[DataPlane]:
    plane = start_data_plane(
        redis_server,
        tmp_path,
        {"DP_UPSTREAM_IDLE_SECONDS": "0.3", "DP_UPSTREAM_MAX_IDLE_PER_ORIGIN": "2"},
    )
    yield plane
    plane.service.stop()


def test_idle_upstream_connections_expire(
    pool_plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    configure(redis_sync, pool_plane, [proxy_to(http_backend.url)])
    assert get(pool_plane, "/echo")[0] == 200
    assert get(pool_plane, "/echo")[0] == 200
    assert http_backend.connections_accepted == 1  # reused while fresh
    time.sleep(0.8)  # past the idle limit: the pooled connection is closed, not reused
    assert get(pool_plane, "/echo")[0] == 200
    assert http_backend.connections_accepted == 2
    deadline = time.monotonic() + 5
    while http_backend.open_connections:  # and the sweeper closes it even with no further request
        assert time.monotonic() < deadline, "idle upstream connection never closed"
        time.sleep(0.05)


@pytest.fixture
def bounded_plane(redis_sync: redis.Redis, redis_server: RedisServer, tmp_path: Path) -> Iterator[DataPlane]:
    # Idle expiry far away, so only the bound can be what closes connections here.
    plane = start_data_plane(
        redis_server,
        tmp_path,
        {"DP_UPSTREAM_IDLE_SECONDS": "60", "DP_UPSTREAM_MAX_IDLE_PER_ORIGIN": "2"},
    )
    yield plane
    plane.service.stop()


def test_idle_pool_is_bounded_per_origin(
    bounded_plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    pool_plane = bounded_plane
    configure(redis_sync, pool_plane, [proxy_to(http_backend.url)])
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(get(pool_plane, "/slow?seconds=0.3")[0]))
        for _ in range(5)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == [200] * 5
    assert http_backend.connections_accepted == 5
    deadline = time.monotonic() + 2
    while http_backend.open_connections > 2:
        assert time.monotonic() < deadline, f"{http_backend.open_connections} upstream connections kept"
        time.sleep(0.02)
    time.sleep(0.3)
    assert http_backend.open_connections == 2
