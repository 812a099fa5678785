"""Slice 1: the process starts, answers unknown hosts with 404 naming the host, serves /health and /metrics,
and stops cleanly on SIGTERM."""

from __future__ import annotations

import http.client
import signal

import pytest

from deploy.local.processes import pid_alive
from tests.data_plane.conftest import DataPlane

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


def test_sigterm_stops_cleanly(data_plane: DataPlane) -> None:
    pid = data_plane.service.pid
    data_plane.service.signal(signal.SIGTERM)
    assert data_plane.service.process is not None
    assert data_plane.service.process.wait(timeout=10) == 0
    assert not pid_alive(pid)
    assert "stopped" in data_plane.service.log_tail()
