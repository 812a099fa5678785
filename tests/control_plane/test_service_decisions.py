"""The pure parts of Docker-managed services: what the controller decides for a picture of desired and
observed state, the container configuration a spec becomes (the bridge-network path, which the tests never
run, is covered here), where a service's endpoint is, image allowlists, build contexts and stats."""

from __future__ import annotations

import os
import tarfile
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

from control_plane.docker.container_config import container_config, container_name, endpoint_url
from control_plane.docker.engine import ContainerInfo
from control_plane.docker.images import (
    BuildContextOutside,
    BuildContextRefused,
    allowlist_refusal,
    build_base,
    build_tag,
    context_tar,
    resolve_context,
)
from control_plane.docker.reconcile import (
    CreateAndStart,
    Remove,
    Restart,
    Start,
    Stop,
    decide,
    observed_state,
)
from control_plane.docker.spec import ServicePort, ServiceRecord, ServiceSpec, ServiceStatus
from control_plane.docker.stats import summarize


def record(**changes: Any) -> ServiceRecord:
    spec = ServiceSpec(
        image="x:1", network_mode="host", ports=[ServicePort(container_port=21001, host_port=21001)]
    )
    return ServiceRecord(name="web", spec=spec, **changes)


def container(cid: str, generation: int, status: str = "running", **changes: Any) -> ContainerInfo:
    fields: dict[str, Any] = {
        "id": cid,
        "name": f"c-{cid}",
        "labels": {"mhp.generation": str(generation)},
        "status": status,
        "running": status == "running",
        "exit_code": 0,
        "oom_killed": False,
        "error": "",
        "restart_count": 0,
        "started_at": 1.0,
        "finished_at": None,
        "health": "",
        "addresses": {},
        "memory_limit_bytes": 0,
    }
    fields.update(changes)
    return ContainerInfo(**fields)


def test_orphans_old_generations_and_duplicates_are_removed_first() -> None:
    assert decide(None, None, [container("a", 1)]) == [Remove("a", "its service no longer exists")]
    steps = decide(record(generation=3), None, [container("old", 2), container("b", 3), container("a", 3)])
    assert steps == [Remove("old", "generation 2 replaced by 3"), Remove("b", "a duplicate of generation 3")]
    assert decide(record(generation=3), None, [container("old", 2)]) == [
        Remove("old", "generation 2 replaced by 3"),
        CreateAndStart(),
    ]


def test_a_failed_attempt_waits_for_a_new_one() -> None:
    failed = ServiceStatus(name="web", failed_attempt="1:0:0")
    assert decide(record(), failed, []) == []
    assert decide(record(start_seq=1), failed, []) == [CreateAndStart()]
    assert decide(record(generation=2), failed, []) == [CreateAndStart()]
    assert decide(record(), failed, [container("a", 1, "created")]) == []


def test_stopped_containers_start_only_when_asked() -> None:
    exited = container("a", 1, "exited", exit_code=137)
    done = ServiceStatus(name="web", start_seq_done=2, restart_seq_done=1)
    # Stopped by itself (a crash under restart policy "no", a manual docker stop): left as it is.
    assert decide(record(start_seq=2, restart_seq=1), done, [exited]) == []
    assert decide(record(start_seq=3, restart_seq=1), done, [exited]) == [Start("a")]
    assert decide(record(start_seq=2, restart_seq=2), done, [exited]) == [Start("a")]
    assert decide(record(), None, [container("a", 1, "created")]) == [Start("a")]
    assert decide(record(restart_seq=2), done, [container("a", 1)]) == [Restart("a")]
    assert decide(record(desired_state="stopped"), done, [container("a", 1)]) == [Stop("a")]
    assert decide(record(desired_state="stopped"), done, [exited]) == []
    assert decide(record(), done, [container("a", 1, "restarting")]) == []


def test_observed_states() -> None:
    running = record()
    assert observed_state(running, None, failed=True) == "failed"
    assert observed_state(running, None, failed=False) == "pending"
    assert observed_state(record(desired_state="stopped"), None, failed=False) == "stopped"
    assert observed_state(running, container("a", 1, health="unhealthy"), failed=False) == "unhealthy"
    assert observed_state(running, container("a", 1, "exited", oom_killed=True), failed=False) == "oom_killed"
    assert observed_state(running, container("a", 1, "exited"), failed=False) == "exited"
    assert observed_state(running, container("a", 1, "restarting"), failed=False) == "restarting"


def test_host_network_configuration_has_safe_defaults() -> None:
    spec = ServiceSpec(
        image="x:1",
        network_mode="host",
        memory_limit="64m",
        cpu_limit=0.5,
        restart_policy="on-failure:3",
        command=["serve"],
        user="1000:1000",
        ports=[ServicePort(name="http", container_port=21001, host_port=21001)],
        healthcheck={"test": ["CMD", "true"], "interval_seconds": 2},
    )
    config = container_config(
        ServiceRecord(name="web", spec=spec, generation=4, owner="alice"),
        image="x:1",
        environment={"A": "1"},
        deployment="d" * 16,
        stop_timeout_seconds=7,
    )
    host = config["HostConfig"]
    assert host["NetworkMode"] == "host" and "PortBindings" not in host and "ExposedPorts" not in config
    assert host["Memory"] == host["MemorySwap"] == 64 * 1024 * 1024
    assert host["NanoCpus"] == 500_000_000 and host["PidsLimit"] == 512
    assert (
        host["CapDrop"] == ["ALL"] and host["SecurityOpt"] == ["no-new-privileges"] and host["Init"] is True
    )
    assert host["ReadonlyRootfs"] is True and "/tmp" in host["Tmpfs"]
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert config["Env"] == ["A=1", "PORT=21001", "PORT_HTTP=21001"]
    assert config["Labels"] == {
        "mhp.deployment": "d" * 16,
        "mhp.service": "web",
        "mhp.generation": "4",
        "mhp.owner": "alice",
    }
    assert config["Healthcheck"]["Interval"] == 2_000_000_000 and config["StopTimeout"] == 7
    assert config["Cmd"] == ["serve"] and config["User"] == "1000:1000"
    assert container_name("d" * 16, "web", 4) == "mhp-dddddddddddd-web-g4"


def test_named_network_publishes_ports_and_the_endpoint_follows_the_container_address() -> None:
    spec = ServiceSpec(
        image="x:1",
        network_mode="services",
        read_only_root=False,
        ports=[
            ServicePort(name="http", container_port=8080, host_port=21001),
            ServicePort(name="dns", container_port=53, host_port=21002, protocol="udp", bind="0.0.0.0"),
        ],
    )
    web = ServiceRecord(name="web", spec=spec)
    config = container_config(web, image="x:1", environment={}, deployment="d", stop_timeout_seconds=10)
    assert config["HostConfig"]["NetworkMode"] == "services" and "Tmpfs" not in config["HostConfig"]
    assert config["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}}
    assert config["HostConfig"]["PortBindings"] == {
        "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "21001"}],
        "53/udp": [{"HostIp": "0.0.0.0", "HostPort": "21002"}],
    }
    assert "PORT=8080" in config["Env"]
    first = container("a", 1, addresses={"services": "172.20.0.5"})
    recreated = container("b", 2, addresses={"services": "172.20.0.9"})
    assert endpoint_url(web, first, service_host="127.0.0.1") == "http://172.20.0.5:8080"
    assert endpoint_url(web, recreated, service_host="127.0.0.1") == "http://172.20.0.9:8080"
    assert endpoint_url(web, container("c", 1), service_host="127.0.0.1") is None
    assert endpoint_url(record(), None, service_host="::1") == "http://[::1]:21001"
    no_ports = ServiceRecord(name="job", spec=ServiceSpec(image="x:1", network_mode="none"))
    assert endpoint_url(no_ports, None, service_host="127.0.0.1") is None


@pytest.mark.parametrize(
    ("reference", "allowlist", "allowed"),
    [
        ("python:3.12", "python", True),
        ("docker.io/library/python@sha256:" + "a" * 64, "python", True),
        ("pythonista:1", "python", False),
        ("ghcr.io/acme/tool:2", "ghcr.io/acme", True),
        ("ghcr.io/acme-evil/tool:2", "ghcr.io/acme", False),
        ("ghcr.io/anyone/x", "ghcr.io", True),
        ("localhost:5000/app:1", "localhost:5000/", True),
        ("mhp-test/busybox:1", "docker.io/mhp-test/", True),
        (
            "mhp-test/busybox:1",
            "docker.io/mhp-test",
            False,
        ),  # Docker reads that as docker.io/library/mhp-test
        ("nginx", "", False),
    ],
)
def test_image_allowlist(reference: str, allowlist: str, allowed: bool) -> None:
    assert (allowlist_refusal(reference, allowlist) is None) == allowed


def test_build_contexts_stay_under_the_root(tmp_path: Path) -> None:
    root = tmp_path / "builds"
    (root / "alice" / "app").mkdir(parents=True)
    (root / "alice" / "app" / "Dockerfile").write_text("FROM scratch\n")
    (root / "bob").mkdir()
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "Dockerfile").write_text("FROM scratch\n")
    os.symlink(tmp_path / "secret", root / "alice" / "escape")
    alice = build_base(str(root), "alice", is_admin=False)
    assert resolve_context(alice, "app", "Dockerfile") == (root / "alice" / "app").resolve()
    for context, dockerfile in (("../bob", "Dockerfile"), ("escape", "Dockerfile"), ("app", "../../x")):
        with pytest.raises(BuildContextOutside):
            resolve_context(alice, context, dockerfile)
    with pytest.raises(BuildContextRefused):
        resolve_context(alice, "app", "Missing")
    with pytest.raises(BuildContextOutside):
        build_base("", "alice", is_admin=True)
    assert resolve_context(build_base(str(root), "admin", is_admin=True), "alice/app", "Dockerfile")


def test_context_tars_are_deterministic_and_never_follow_links(tmp_path: Path) -> None:
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "outside.txt").write_text("not for the engine")
    os.symlink(tmp_path / "outside.txt", tmp_path / "ctx" / "link")
    first = context_tar(tmp_path / "ctx", max_bytes=1 << 20)
    os.utime(tmp_path / "ctx" / "Dockerfile", (0, 12345))
    assert context_tar(tmp_path / "ctx", max_bytes=1 << 20) == first
    with tarfile.open(fileobj=BytesIO(first)) as tar:
        link = tar.getmember("link")
        assert link.issym() and b"not for the engine" not in first
    assert build_tag("web", first, "Dockerfile", {}) == build_tag("web", first, "Dockerfile", {})
    assert build_tag("web", first, "Dockerfile", {"A": "1"}) != build_tag("web", first, "Dockerfile", {})
    with pytest.raises(BuildContextRefused):
        context_tar(tmp_path / "ctx", max_bytes=5)


def test_stats_are_computed_like_the_docker_cli() -> None:
    sample = {
        "cpu_stats": {
            "cpu_usage": {"total_usage": 3_000_000},
            "system_cpu_usage": 200_000_000,
            "online_cpus": 2,
        },
        "precpu_stats": {"cpu_usage": {"total_usage": 1_000_000}, "system_cpu_usage": 100_000_000},
        "memory_stats": {
            "usage": 10_000_000,
            "limit": 40_000_000,
            "stats": {"total_inactive_file": 2_000_000},
        },
        "networks": {"eth0": {"rx_bytes": 10, "tx_bytes": 20}, "eth1": {"rx_bytes": 1, "tx_bytes": 2}},
        "blkio_stats": {
            "io_service_bytes_recursive": [{"op": "Read", "value": 7}, {"op": "Write", "value": 9}]
        },
        "pids_stats": {"current": 3},
    }
    stats = summarize(sample)
    assert stats.cpu_percent == 4.0 and stats.memory_used_bytes == 8_000_000 and stats.memory_percent == 20.0
    assert (stats.network_rx_bytes, stats.network_tx_bytes) == (11, 22)
    assert (stats.block_read_bytes, stats.block_write_bytes, stats.pids) == (7, 9, 3)
    assert summarize({}).cpu_percent == 0.0
