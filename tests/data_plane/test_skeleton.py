"""Slice 1: the process starts, answers unknown hosts with 404 naming the host, serves /health and /metrics,
and stops cleanly on SIGTERM."""

from __future__ import annotations

import http.client
import signal

import pytest

from deploy.local.processes import pid_alive
from tests.data_plane.conftest import DataPlane
from tests.data_plane.helpers import raw_exchange

pytestmark = pytest.mark.proxy


def test_unknown_host_gets_404_naming_it(data_plane: DataPlane) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", data_plane.http_port, timeout=5)
    conn.request("GET", "/anything", headers={"Host": "Nobody.Example.COM:8080"})
    response = conn.getresponse()
    body = response.read().decode()
    assert response.status == 404
    assert "nobody.example.com" in body
    # Keep-alive: the same connection answers again.
    conn.request("GET", "/", headers={"Host": "other.example"})
    response = conn.getresponse()
    assert response.status == 404 and "other.example" in response.read().decode()
    conn.close()


def test_health_and_metrics(data_plane: DataPlane) -> None:
    status, document = data_plane.health()
    assert status == 200
    assert document["status"] == "ok"
    assert document["redis"] == "connected"
    assert document["config_version"] == 0
    conn = http.client.HTTPConnection("127.0.0.1", data_plane.http_port, timeout=5)
    conn.request("GET", "/", headers={"Host": "missing.test"})
    conn.getresponse().read()
    metrics = data_plane.metrics()
    assert 'mhp_requests_total{status="404"} 1.0' in metrics
    assert "mhp_open_connections" in metrics
    assert "mhp_config_version 0.0" in metrics


@pytest.mark.parametrize(
    ("request_line", "status_line"),
    [
        (b"GET /health HTTP/1.1", b"HTTP/1.1 200 OK"),
        (b"GET /metrics HTTP/1.1", b"HTTP/1.1 200 OK"),
        (b"HEAD /health HTTP/1.1", b"HTTP/1.1 200 OK"),
        (b"GET /nothing-here HTTP/1.1", b"HTTP/1.1 404 Not Found"),
        (b"POST /health HTTP/1.1", b"HTTP/1.1 405 Method Not Allowed"),
    ],
)
def test_internal_answers_carry_a_reason_phrase(
    data_plane: DataPlane, request_line: bytes, status_line: bytes
) -> None:
    """Monitoring clients and people reading `curl -v` expect `200 OK`, not `200 ` with nothing after it."""
    answer = raw_exchange(
        data_plane,
        request_line + b"\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
        port=data_plane.internal_port,
    )
    assert answer.split(b"\r\n", 1)[0] == status_line


def test_sigterm_stops_cleanly(data_plane: DataPlane) -> None:
    pid = data_plane.service.pid
    data_plane.service.signal(signal.SIGTERM)
    assert data_plane.service.process is not None
    assert data_plane.service.process.wait(timeout=10) == 0
    assert not pid_alive(pid)
    assert "stopped" in data_plane.service.log_tail()
