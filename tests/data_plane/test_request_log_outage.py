"""A real data plane's request log through a real Redis outage: redis-server killed (SIGKILL) under load and
started again on the same port with the same data.

Every request the data plane answers carries its request id (`X-Request-Id`), so the test knows exactly
which entries must reach the stream. Waits poll /health or Redis under a generous deadline that only stops a
hung test; no assertion depends on how long anything took.
"""

from __future__ import annotations

import http.client
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from shared import keys
from tests.data_plane.backends import HttpBackend
from tests.data_plane.conftest import DataPlane, start_data_plane
from tests.data_plane.helpers import configure, get, proxy_to
from tests.harness.services import RedisServer, start_redis

STREAM = keys.request_log_stream()


def wait_until(predicate: Callable[[], object], what: str, deadline_seconds: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting: {what}")
        time.sleep(0.02)


@dataclass
class Load:
    """Keep-alive clients sending GETs until stopped; records every answer's status and request id."""

    plane: DataPlane
    clients: int = 4
    answers: list[tuple[int, str]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        for index in range(self.clients):
            thread = threading.Thread(target=self._run, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _run(self, index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.plane.http_port, timeout=10)
        try:
            number = 0
            while not self._stop.is_set():
                connection.request("GET", f"/load/{index}/{number}", headers={"Host": "app.test"})
                response = connection.getresponse()
                response.read()
                with self._lock:
                    self.answers.append((response.status, response.getheader("x-request-id") or ""))
                number += 1
        except BaseException as error:  # surfaced by stop(): a load thread must not fail silently
            self.errors.append(error)
        finally:
            connection.close()

    def count(self) -> int:
        with self._lock:
            return len(self.answers)

    def stop(self) -> list[tuple[int, str]]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        assert not self.errors, self.errors
        return list(self.answers)


@dataclass
class Outage:
    server: RedisServer
    workdir: Path
    plane: DataPlane
    client: redis.Redis

    def kill(self) -> None:
        # SAVE first so the restarted server has the routing config back (the tests run Redis without
        # persistence); the request-log stream at that moment comes back too, which changes nothing here.
        self.client.save()
        self.server.service.signal(signal.SIGKILL)
        self.server.service.process.wait(timeout=10)  # type: ignore[union-attr]
        wait_until(lambda: self.plane.health()[1]["redis"] == "unreachable", "the data plane saw Redis go")

    def restart(self) -> None:
        self.server = start_redis(self.workdir, port=self.server.port, password=self.server.password)
        wait_until(lambda: self.plane.health()[1]["redis"] == "connected", "the data plane reconnected")


@pytest.fixture
def outage(tmp_path: Path, http_backend: HttpBackend) -> Iterator[Callable[[dict[str, str]], Outage]]:
    started: list[Outage] = []

    def start(extra_env: dict[str, str]) -> Outage:
        server = start_redis(tmp_path / "redis")
        client = redis.Redis.from_url(server.url, password=server.password, decode_responses=True)
        plane = start_data_plane(server, tmp_path, extra_env)
        state = Outage(server, tmp_path / "redis", plane, client)
        started.append(state)
        configure(client, plane, [proxy_to(http_backend.url)])
        return state

    try:
        yield start
    finally:
        for state in started:
            state.plane.service.stop()
            state.client.close()
            state.server.service.stop()


def logged_ids(client: redis.Redis) -> list[str]:
    return [fields["request_id"] for _, fields in client.xrange(STREAM)]


def test_an_outage_shorter_than_the_backlog_loses_no_entry(
    outage: Callable[[dict[str, str]], Outage],
) -> None:
    state = outage({})
    load = Load(state.plane)
    load.start()
    try:
        wait_until(lambda: load.count() >= 200, "load running with Redis up")
        state.kill()
        during = load.count()
        # More than the 10,000 entries the log used to hold (dropping the newest): the bound is in bytes now.
        wait_until(
            lambda: load.count() >= during + 12000, "12,000 requests answered while Redis was down", 120
        )
        assert state.plane.health()[1]["request_log_backlog_entries"] > 0
        state.restart()
        after = load.count()
        wait_until(lambda: load.count() >= after + 200, "load running after the restart")
    finally:
        answers = load.stop()

    assert {status for status, _ in answers} == {200}
    served = [request_id for _, request_id in answers]
    assert len(set(served)) == len(served)
    wait_until(
        lambda: set(served) <= set(logged_ids(state.client)), "every served request's entry in the stream"
    )
    _, health = state.plane.health()
    assert health["request_log_dropped"] == 0
    assert health["request_log_backlog_dropped"] == 0
    assert health["request_log_backlog_entries"] == 0
    assert state.plane.metric("mhp_log_backlog_dropped_total") == 0
    assert state.plane.metric("mhp_log_dropped_total") == 0


def test_an_outage_past_the_backlog_bound_drops_the_oldest_and_counts_them(
    outage: Callable[[dict[str, str]], Outage],
) -> None:
    # Room for about 500 entries of this test's size; the outage serves 1,000 requests.
    bound = 256 * 1024
    state = outage({"DP_LOG_BACKLOG_MAX_BYTES": str(bound)})
    before = [get(state.plane, f"/before/{number}")[1]["x-request-id"] for number in range(5)]
    wait_until(lambda: set(before) <= set(logged_ids(state.client)), "entries before the outage written")
    state.kill()
    during = []
    for number in range(1000):
        status, headers, _ = get(state.plane, f"/during/{number}")
        assert status == 200
        during.append(headers["x-request-id"])
    _, health = state.plane.health()
    dropped = health["request_log_backlog_dropped"]
    assert 0 < dropped < 800  # room for about 500: the checks of the newest below are not vacuous
    assert health["request_log_backlog_entries"] == 1000 - dropped
    assert health["request_log_backlog_bytes"] <= bound
    state.restart()

    wait_until(lambda: state.plane.health()[1]["request_log_backlog_entries"] == 0, "the backlog written")
    logged = set(logged_ids(state.client))
    missing = [request_id for request_id in during if request_id not in logged]
    # Counted exactly, in /health and in /metrics.
    assert len(missing) == dropped
    assert state.plane.metric("mhp_log_backlog_dropped_total") == dropped
    assert state.plane.metric("mhp_log_dropped_total") == dropped
    assert state.plane.health()[1]["request_log_dropped"] == dropped
    # The oldest went: a batch being written when the bound was reached (at most 200 entries, the writer's
    # batch size) is never dropped from under the write, so the dropped ones are among the oldest
    # dropped + 200, and everything newer is in the stream.
    assert set(before) <= logged
    assert set(missing) <= set(during[: dropped + 200])
    assert set(during[dropped + 200 :]) <= logged
