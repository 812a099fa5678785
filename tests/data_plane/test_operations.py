"""Operations: `--workers N` runs N SO_REUSEPORT worker processes; SIGTERM drains in-flight requests (they
complete) while new connections are refused, and leaves no process behind."""

from __future__ import annotations

import http.client
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
import redis

from deploy.local.processes import pid_alive
from tests.data_plane.backends import HttpBackend
from tests.data_plane.conftest import DataPlane, start_data_plane
from tests.data_plane.helpers import configure, get, proxy_to
from tests.harness.prometheus import sample_value
from tests.harness.services import RedisServer

pytestmark = pytest.mark.proxy


def children_of(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as handle:
        return [int(p) for p in handle.read().split()]


def test_workers_share_the_port_and_stop_together(
    redis_sync: redis.Redis, redis_server: RedisServer, tmp_path: Path, http_backend: HttpBackend
) -> None:
    plane = start_data_plane(redis_server, tmp_path, args=["--workers", "2"])
    try:
        workers = children_of(plane.service.pid)
        assert len(workers) == 2
        # Worker i answers /health and /metrics on INTERNAL_PORT + i, each with its own pid and counters.
        internal = [
            DataPlane(plane.http_port, plane.proxy_port, plane.internal_port + index, plane.service)
            for index in (0, 1)
        ]
        version = configure(redis_sync, plane, [proxy_to(http_backend.url)])
        for worker in internal:
            worker.wait_for_version(version, timeout=10)  # each worker loads the table on its own
        assert {worker.health()[1]["pid"] for worker in internal} == set(workers)
        for _ in range(20):  # every worker loaded the table: any connection may land on any worker
            assert get(plane, "/echo")[0] == 200
        counted = sum(sample_value(w.metrics(), "mhp_requests_total", status="200") or 0 for w in internal)
        assert counted == 20  # every request counted once, by the worker that served it
        plane.service.signal(signal.SIGTERM)
        assert plane.service.process is not None
        assert plane.service.process.wait(timeout=15) == 0
        for pid in [plane.service.pid, *workers]:
            assert not pid_alive(pid)
    finally:
        plane.service.stop()


def test_sigterm_drains_in_flight_requests(
    data_plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    configure(redis_sync, data_plane, [proxy_to(http_backend.url)])
    idle = http.client.HTTPConnection("127.0.0.1", data_plane.http_port, timeout=10)
    idle.request("GET", "/echo", headers={"Host": "app.test"})
    assert idle.getresponse().read()
    results: list[tuple[int, bytes]] = []

    def slow_request() -> None:
        status, _, body = get(data_plane, "/slow?seconds=1.5")
        results.append((status, body))

    thread = threading.Thread(target=slow_request)
    thread.start()
    deadline = time.monotonic() + 5
    while not any(r["target"].startswith("/slow") for r in http_backend.requests):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    data_plane.service.signal(signal.SIGTERM)
    time.sleep(0.3)
    with pytest.raises(OSError):  # the listener is closed: no new connections during the drain
        socket.create_connection(("127.0.0.1", data_plane.http_port), timeout=1).close()
    thread.join(10)
    assert results == [(200, b"slow")]
    assert data_plane.service.process is not None
    assert data_plane.service.process.wait(timeout=10) == 0
    # The idle keep-alive connection was closed at the start of the drain.
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        idle.request("GET", "/echo", headers={"Host": "app.test"})
        idle.getresponse()
