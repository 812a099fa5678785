"""Smoke test of the benchmark harness (not of anyone's speed): a --quick run against DIRECT and the nginx
peer must start real processes, measure every size, stop everything it started
and write the documented JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench.peer_configs import PAYLOADS
from tests.harness.services import port_open

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_quick_run_writes_complete_json(tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.bench.run",
            "--quick",
            "--targets",
            "direct,nginx",
            "--output",
            str(output),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    document = json.loads(output.read_text())

    assert document["schema_version"] == 1
    assert document["interrupted"] is False
    assert document["failures"] == []
    assert document["settings"]["targets"] == ["direct", "nginx"]
    assert document["settings"]["sizes"] == {name: p.size_bytes for name, p in PAYLOADS.items()}
    assert document["targets"]["direct"]["status"] == "ok"
    assert document["targets"]["nginx"]["status"] == "ok"
    # Same Host handling as every peer: an unknown host is refused by the proxy.
    assert document["targets"]["nginx"]["unknown_host_status"] == 404
    assert set(document["results"]) == {*PAYLOADS, "tls-small", "tls-handshake"}
    assert set(document["settings"]["workloads"]) == set(document["results"])
    assert document["targets"]["nginx"]["tls_port"] is not None
    for workload, by_target in document["results"].items():
        tls = workload.startswith("tls-")
        # DIRECT is the plain-HTTP backend: it has no TLS listener to measure
        assert set(by_target) == ({"nginx"} if tls else {"direct", "nginx"}), workload
        size_bytes = PAYLOADS["small" if tls else workload].size_bytes
        for name, measured in by_target.items():
            assert measured["requests"] > 0, (workload, name)
            # every response was a 2xx with no socket error: the harness measured real proxying
            assert measured["errors"] == 0, (workload, name, measured)
            assert measured["bytes"] >= measured["requests"] * size_bytes
            assert 0 < measured["latency_p50_ms"] <= measured["latency_p99_ms"] <= measured["latency_max_ms"]
            assert measured["other_cpu_percent"] >= 0
        nginx = by_target["nginx"]
        assert nginx["cpu_seconds"] > 0
        # every request really went through to the backend...
        assert nginx["backend_requests"] >= nginx["requests"]
        # ...over reused upstream connections (the peer's keep-alive config works; without it every request
        # opens one). nginx may open a few more than there are clients, so bound by requests, not clients.
        assert nginx["backend_connections_opened"] * 4 < nginx["requests"], (workload, nginx)
        if not tls:
            assert by_target["direct"]["cpu_percent"] is None
            assert set(document["ratios"][workload]) == {"nginx/direct"}
    assert {goal["met"] for goal in document["goals"]} == {None}  # ours was not measured
    assert "small" in run.stdout and "nginx" in run.stdout

    # Every child was stopped: nothing listens any more on the ports the run used.
    for name, info in document["targets"].items():
        assert not port_open("127.0.0.1", info["port"]), f"{name} still listening on {info['port']}"
