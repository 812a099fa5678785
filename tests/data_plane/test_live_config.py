"""Live configuration: changes written to Redis (the shared transaction + PUBLISH) are live within 100 ms;
the last good table keeps serving while Redis is down, and the data plane reconnects when it returns."""

from __future__ import annotations

import http.client
import time
from pathlib import Path

import pytest
import redis

from shared import keys
from shared.models import Route
from tests.data_plane.backends import HttpBackend
from tests.data_plane.conftest import DataPlane, start_data_plane
from tests.data_plane.helpers import configure, get, proxy_to
from tests.data_plane.redis_config import write_config
from tests.harness.services import start_redis

pytestmark = pytest.mark.proxy


def _status(conn: http.client.HTTPConnection, host: str, path: str = "/echo") -> tuple[int, bytes]:
    conn.request("GET", path, headers={"Host": host})
    response = conn.getresponse()
    return response.status, response.read()


def test_new_proxy_is_live_within_100ms(
    data_plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", data_plane.http_port, timeout=5)
    assert _status(conn, "fresh.test")[0] == 404
    started = time.monotonic()
    write_config(redis_sync, proxies=[proxy_to(http_backend.url, "fresh.test")])
    while _status(conn, "fresh.test")[0] != 200:
        assert time.monotonic() - started < 2, "proxy never became live"
    elapsed = time.monotonic() - started
    assert elapsed < 0.1, f"proxy live after {elapsed * 1000:.0f} ms"


def test_route_change_is_live_within_100ms(data_plane: DataPlane, redis_sync: redis.Redis) -> None:
    first, second = HttpBackend(), HttpBackend()
    try:
        configure(redis_sync, data_plane, [proxy_to(first.url)])
        conn = http.client.HTTPConnection("127.0.0.1", data_plane.http_port, timeout=5)
        assert _status(conn, "app.test", "/r/echo")[1].find(str(first.port).encode()) > 0
        started = time.monotonic()
        write_config(redis_sync, routes=[Route(id="r", path_pattern="/r/", target_url=second.url)])
        while str(second.port).encode() not in _status(conn, "app.test", "/r/echo")[1]:
            assert time.monotonic() - started < 2, "route never became live"
        elapsed = time.monotonic() - started
        assert elapsed < 0.1, f"route live after {elapsed * 1000:.0f} ms"
    finally:
        first.close()
        second.close()


def test_missed_publish_is_caught_by_reconcile(
    redis_sync: redis.Redis, redis_server: object, tmp_path: Path, http_backend: HttpBackend
) -> None:
    plane = start_data_plane(redis_server, tmp_path, {"RECONCILE_INTERVAL_SECONDS": "0.3"})  # type: ignore[arg-type]
    try:
        version = write_config(redis_sync, proxies=[proxy_to(http_backend.url, "quiet.test")], publish=False)
        plane.wait_for_version(version, timeout=3)
        assert get(plane, "/echo", host="quiet.test")[0] == 200
    finally:
        plane.service.stop()


def test_bad_row_is_skipped_and_good_rows_keep_serving(
    data_plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    configure(redis_sync, data_plane, [proxy_to(http_backend.url, "good.test")])
    version = write_config(redis_sync, raw_proxies={"bad.test": '{"hostname": "bad.test", "target_url": 5}'})
    data_plane.wait_for_version(version)
    assert get(data_plane, "/echo", host="good.test")[0] == 200
    assert get(data_plane, "/echo", host="bad.test")[0] == 404


def test_serves_last_good_table_while_redis_is_down_and_reconnects(
    tmp_path: Path, http_backend: HttpBackend
) -> None:
    own_redis = start_redis(tmp_path / "redis")
    plane = start_data_plane(own_redis, tmp_path)
    client = redis.Redis.from_url(own_redis.url, password=own_redis.password, decode_responses=True)
    try:
        configure(client, plane, [proxy_to(http_backend.url, "kept.test")])
        client.close()
        own_redis.service.stop()
        deadline = time.monotonic() + 10
        while plane.health()[0] != 503:
            assert time.monotonic() < deadline, "health never reported Redis down"
            time.sleep(0.05)
        _status, document = plane.health()
        assert document["redis"] == "unreachable" and document["config_version"] >= 1
        assert get(plane, "/echo", host="kept.test")[0] == 200

        restarted = start_redis(tmp_path / "redis", port=own_redis.port, password=own_redis.password)
        own_redis = restarted
        client = redis.Redis.from_url(own_redis.url, password=own_redis.password, decode_responses=True)
        deadline = time.monotonic() + 15
        while plane.health()[0] != 200:
            assert time.monotonic() < deadline, "data plane never reconnected"
            time.sleep(0.05)
        # The restarted Redis is empty: the data plane follows it (Redis is the source of truth).
        write_config(client, proxies=[proxy_to(http_backend.url, "after.test")])
        deadline = time.monotonic() + 5
        while get(plane, "/echo", host="after.test")[0] != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert client.get(keys.config_version()) == "1"
    finally:
        client.close()
        plane.service.stop()
        own_redis.service.stop()
