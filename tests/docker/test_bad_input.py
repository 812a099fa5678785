"""Bad input gets a clear answer and leaves nothing behind. Refusals the API can judge (an image outside the
allowlist, a build outside the build root, a public bind or the host network without a grant, a port in
use) are 4xx with nothing created; what only the engine can judge (an unknown image, a failed pull or
build, a limit it refuses) puts the service in `failed` with the engine's own message, no container left,
until a change fixes it."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.control_plane.conftest import ADMIN
from tests.harness.dockerd import Dockerd

from .conftest import BUILD_TENANT, PORTS, SERVICES, httpd_service, new_token, wait_for_state
from .images import write_build_context

pytestmark = [pytest.mark.docker, pytest.mark.slow]


async def assert_nothing_of(http: httpx.AsyncClient, dockerd: Dockerd, name: str) -> None:
    assert (await http.get(SERVICES + name, headers=ADMIN)).status_code == 404
    assert [p for p in (await http.get(PORTS, headers=ADMIN)).json() if p["service"] == name] == []
    assert dockerd.containers(label=[f"mhp.service={name}"]) == []


async def fails_with(
    http: httpx.AsyncClient, dockerd: Dockerd, body: dict[str, Any], message: str
) -> dict[str, Any]:
    created = await http.post(SERVICES, json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    service = await wait_for_state(http, body["name"], "failed")
    assert message in service["status"]["error"], service["status"]
    assert dockerd.containers(label=[f"mhp.service={body['name']}"]) == [], (
        "a failed attempt left a container"
    )
    return service


async def test_unknown_images_fail_with_the_engines_message(
    http: httpx.AsyncClient, dockerd: Dockerd, busybox_image: str
) -> None:
    await fails_with(
        http,
        dockerd,
        httpd_service("nopull", "mhp-test/absent:1", pull="never"),
        "No such image: mhp-test/absent:1",
    )
    # A registry that does not answer (on loopback: test traffic never leaves 127.0.0.1).
    service = await fails_with(http, dockerd, httpd_service("nothere", "127.0.0.1:9/absent:1"), "127.0.0.1:9")
    assert "connection refused" in service["status"]["error"].lower()


async def test_a_failed_build_fails_and_a_fixed_one_runs(
    http: httpx.AsyncClient, dockerd: Dockerd, build_root: Path
) -> None:
    broken = write_build_context(build_root / "broken", b"FROM scratch\nCOPY missing.txt /\n")
    body = httpd_service("broken", "", build={"context": str(broken)})
    del body["image"]
    await fails_with(http, dockerd, body, "missing.txt")
    # Fixing the Dockerfile and asking again (a new attempt) builds it; the build is cached by content.
    write_build_context(broken)
    assert (await http.post(SERVICES + "broken/restart", headers=ADMIN)).status_code == 202
    service = await wait_for_state(http, "broken", "running")
    assert service["status"]["image"].startswith("mhp-build/broken:")


async def test_a_limit_the_engine_refuses_fails_until_changed(
    http: httpx.AsyncClient, dockerd: Dockerd, busybox_image: str
) -> None:
    await fails_with(
        http, dockerd, httpd_service("tiny", busybox_image, memory_limit="4m"), "Minimum memory limit"
    )
    changed = await http.patch(SERVICES + "tiny", json={"memory_limit": "32m"}, headers=ADMIN)
    assert changed.status_code == 200
    service = await wait_for_state(http, "tiny", "running")
    assert service["status"]["error"] == "" and service["generation"] == 2


async def test_a_container_that_will_not_start_is_removed(
    http: httpx.AsyncClient, dockerd: Dockerd, busybox_image: str
) -> None:
    """Created, then refused by the engine at start (the image has no such user): removed, not left behind."""
    body = {"name": "nouser", "image": busybox_image, "user": "no-such-user", "network_mode": "none"}
    await fails_with(http, dockerd, body, "no-such-user")


async def test_port_conflicts_are_refused_before_anything_is_made(
    http: httpx.AsyncClient, dockerd: Dockerd, busybox_image: str
) -> None:
    taken = await http.post(PORTS, json={"purpose": "someone else's"}, headers=ADMIN)
    port = taken.json()["port"]
    refused = await http.post(
        SERVICES,
        json=httpd_service("clash", busybox_image, ports=[{"name": "http", "host_port": port}]),
        headers=ADMIN,
    )
    assert refused.status_code == 409 and "already allocated" in refused.json()["detail"]
    await assert_nothing_of(http, dockerd, "clash")
    with socket.socket() as other_program:
        other_program.bind(("127.0.0.1", port + 1))
        other_program.listen()
        body = httpd_service(
            "clash", busybox_image, ports=[{"name": "a"}, {"name": "b", "host_port": port + 1}]
        )
        refused = await http.post(SERVICES, json=body, headers=ADMIN)
        assert refused.status_code == 409 and "in use on this host" in refused.json()["detail"]
    # The first port of that request had been allocated already: it was released again.
    await assert_nothing_of(http, dockerd, "clash")
    assert [p["port"] for p in (await http.get(PORTS, headers=ADMIN)).json()] == [port]


async def test_what_ordinary_tokens_may_not_run(
    http: httpx.AsyncClient, dockerd: Dockerd, busybox_image: str, build_root: Path
) -> None:
    tenant = await new_token(http, BUILD_TENANT)
    granted = await new_token(http, "granted", grants=["host-network"])
    other_dir = write_build_context(build_root / "someone-else")
    own_dir = write_build_context(build_root / BUILD_TENANT / "app")
    outside = write_build_context(build_root.parent / "outside")
    cases: list[tuple[dict[str, str], dict[str, Any], int, str]] = [
        (
            tenant,
            {"name": "a", "image": "docker.io/library/alpine:3", "network_mode": "none"},
            403,
            "allowlist",
        ),
        (tenant, {"name": "b", "build": {"context": str(other_dir)}, "network_mode": "none"}, 403, "outside"),
        (
            tenant,
            {"name": "c", "build": {"context": "../someone-else"}, "network_mode": "none"},
            403,
            "outside",
        ),
        (ADMIN, {"name": "d", "build": {"context": str(outside)}, "network_mode": "none"}, 403, "outside"),
        (tenant, httpd_service("e", busybox_image), 403, "host-network"),
        (
            tenant,
            {"name": "f", "image": busybox_image, "network_mode": "backend"},
            403,
            "DOCKER_TENANT_NETWORKS",
        ),
        (
            granted,
            httpd_service("g", busybox_image, ports=[{"name": "http", "bind": "0.0.0.0"}]),
            403,
            "public-ports",
        ),
        (granted, httpd_service("h", busybox_image, memory_limit="3g"), 422, "memory_limit"),
        (granted, httpd_service("i", busybox_image, cap_add=["SYS_ADMIN"]), 403, "SYS_ADMIN"),
        (ADMIN, {"name": "external", "image": busybox_image}, 422, "reserved"),
    ]
    for headers, body, status, message in cases:
        refused = await http.post(SERVICES, json=body, headers=headers)
        assert refused.status_code == status and message in refused.text, (body["name"], refused.text)
        await assert_nothing_of(http, dockerd, body["name"])
    # What they may: their own build directory (relative to it, too), and allowed images on the host network
    # with the grant, on 127.0.0.1.
    own = await http.post(
        SERVICES,
        json={
            "name": "own",
            "build": {"context": "app"},
            "network_mode": "none",
            "command": ["busybox", "sleep", "60"],
        },
        headers=tenant,
    )
    assert own.status_code == 201, own.text
    assert (await wait_for_state(http, "own", "running", headers=tenant))["build"]["context"] == "app"
    assert own_dir.is_dir()
    allowed = await http.post(SERVICES, json=httpd_service("web", busybox_image), headers=granted)
    assert allowed.status_code == 201, allowed.text
