"""Smoke test of the benchmark harness (not of anyone's speed): a --quick run against DIRECT, our data plane
and the nginx peer must start real processes, measure every size and both TLS workloads on both proxies (ours
with the run's certificate stored encrypted in its Redis), ours' protected proxy with a valid token, the
WebSocket, SSE and idle-connection rows, stop everything it started and write the documented JSON.
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
@pytest.mark.timeout(300)
def test_quick_run_writes_complete_json(tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.bench.run",
            "--quick",
            "--targets",
            "direct,ours,nginx",
            "--output",
            str(output),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=290,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    document = json.loads(output.read_text())

    assert document["schema_version"] == 1
    assert document["interrupted"] is False
    assert document["failures"] == []
    assert document["settings"]["targets"] == ["direct", "ours", "nginx"]
    assert document["settings"]["sizes"] == {name: p.size_bytes for name, p in PAYLOADS.items()}
    for name in ("direct", "ours", "nginx"):
        # "ok" means every payload came back byte-exact, and for the proxies the TLS port served the run's
        # certificate (verified against it) both without SNI and with SNI bench.local
        assert document["targets"][name]["status"] == "ok", document["targets"][name]
    for name in ("ours", "nginx"):
        # Same Host handling as every peer: an unknown host is refused by the proxy.
        assert document["targets"][name]["unknown_host_status"] == 404
        assert document["targets"][name]["tls_port"] is not None
        assert "tls_skipped" not in document["targets"][name]
    assert set(document["results"]) == {*PAYLOADS, "protected", "tls-small", "tls-handshake"}
    assert set(document["settings"]["workloads"]) == set(document["results"])
    # Only ours can check its own tokens: the protected workload is measured on ours alone.
    protected = document["results"].pop("protected")
    assert set(protected) == {"ours"}
    assert protected["ours"]["errors"] == 0 and protected["ours"]["requests"] > 0
    for workload, by_target in document["results"].items():
        tls = workload.startswith("tls-")
        # DIRECT is the plain-HTTP backend: it has no TLS listener to measure
        assert set(by_target) == ({"ours", "nginx"} if tls else {"direct", "ours", "nginx"}), workload
        size_bytes = PAYLOADS["small" if tls else workload].size_bytes
        for name, measured in by_target.items():
            assert measured["requests"] > 0, (workload, name)
            # every response was a 2xx with no socket error: the harness measured real proxying
            assert measured["errors"] == 0, (workload, name, measured)
            assert measured["bytes"] >= measured["requests"] * size_bytes
            assert 0 < measured["latency_p50_ms"] <= measured["latency_p99_ms"] <= measured["latency_max_ms"]
            assert measured["other_cpu_percent"] >= 0
        for name in ("ours", "nginx"):
            proxy = by_target[name]
            assert proxy["cpu_seconds"] > 0
            # The backend sees its own traffic only (not wrk's), so a proxy's requests all went through it...
            assert proxy["backend_requests"] >= proxy["requests"], (workload, name, proxy)
            # ...over reused upstream connections (keep-alive upstream works; without it every request opens
            # one). A proxy may open a few more than there are clients, so bound by requests, not clients.
            assert proxy["backend_connections_opened"] * 4 < proxy["requests"], (workload, name, proxy)
        if tls:
            assert set(document["ratios"][workload]) == {"ours/nginx"}
        else:
            assert by_target["direct"]["cpu_percent"] is None
            assert set(document["ratios"][workload]) == {"ours/direct", "nginx/direct", "ours/nginx"}
    # The rows wrk cannot drive ran on every target (DIRECT: straight to their backends; idle memory is
    # a proxy's), with nothing lost and every idle connection held.
    extras = document["extra_rows"]
    assert set(extras["ws-echo"]) == set(extras["sse-delay"]) == {"direct", "ours", "nginx"}
    assert set(extras["idle-memory"]) == {"ours", "nginx"}
    for name in ("direct", "ours", "nginx"):
        assert extras["ws-echo"][name]["round_trips"] > 0, name
        assert extras["sse-delay"][name]["events"] > 0 and extras["sse-delay"][name]["lost"] == 0, name
    for name in ("ours", "nginx"):
        assert extras["idle-memory"][name]["connections"] == 10_000, name
    # Without Caddy, only the targets against nginx, ours alone, or ours unprotected can be evaluated.
    measured = {goal["workload"] for goal in document["goals"] if goal["floor_met"] is not None}
    assert measured == {
        "OAuth-protected small GET vs the same proxy unprotected",
        "WebSocket 32 B echo round trips/s",
        "SSE event delay p99 at 6,400 events/s",
        "memory per 10,000 idle keep-alive connections",
        "1 MiB GET (MB/s)",
    }
    assert "tls-handshake" in run.stdout and "ours/nginx" in run.stdout
    assert "TLS workloads skipped" not in run.stdout

    # Every child was stopped: nothing listens any more on the ports the run used.
    for name, info in document["targets"].items():
        for port in (info["port"], info["tls_port"]):
            assert port is None or not port_open("127.0.0.1", port), f"{name} still listening on {port}"
