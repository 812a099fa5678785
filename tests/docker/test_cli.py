"""`mhp service ...` and `mhp port ...` as real subprocesses against a control plane managing a real dockerd:
tables for people, --json for scripts, `logs -f` streaming, and errors as one line."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import time
from typing import Any

import httpx
import pytest

from tests.control_plane.conftest import ADMIN_TOKEN
from tests.control_plane.test_cli import fails, mhp_argv, ok, run

from .conftest import ServicesPlane, wait_for_state
from .images import HTTPD_COMMAND

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def as_json(plane: ServicesPlane, *args: str) -> Any:
    return json.loads(ok(run(plane, *args, "--json")))  # type: ignore[arg-type]


async def test_services_from_the_command_line(
    services_plane: ServicesPlane, http: httpx.AsyncClient, busybox_image: str
) -> None:
    plane = services_plane
    created = as_json(
        plane,
        "service",
        "create",
        "web",
        "--image",
        busybox_image,
        "--command",
        " ".join(HTTPD_COMMAND[:2]) + f" '{HTTPD_COMMAND[2]}'",
        "--network",
        "host",
        "--port",
        "http",
        "--memory",
        "32m",
        "--env",
        "MODE=cli",
        "--secret-env",
        "TOKEN=from-the-cli",
        "--auto-proxy",
        "--no-https",
    )
    assert created["command"] == HTTPD_COMMAND and created["auto_proxy"] == "web.test.localhost"
    assert created["environment"] == {"MODE": "cli", "TOKEN": {"secret": True}}
    service = await wait_for_state(http, "web", "running")
    port = service["ports"][0]["host_port"]

    table = ok(run(plane, "service", "list"))  # type: ignore[arg-type]
    assert "NAME" in table and "STATE" in table and "running" in table
    assert f"http 127.0.0.1:{port}->{port}/tcp" in table
    shown = ok(run(plane, "service", "show", "web"))  # type: ignore[arg-type]
    assert f"http://127.0.0.1:{port}" in shown

    # logs -f streams what the container writes from then on (read on a thread: readline blocks).
    env = {k: v for k, v in os.environ.items() if not k.startswith("MHP_")}
    env.update(MHP_API_URL=plane.url, MHP_ENV_FILE=os.devnull, MHP_TOKEN=ADMIN_TOKEN)
    follower = subprocess.Popen(  # noqa: ASYNC220 - a long-lived child, read below while it runs
        [*mhp_argv(), "service", "logs", "-f", "--tail", "5", "web"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(follower.stdout or []), daemon=True)
    reader.start()
    try:
        async with httpx.AsyncClient() as client:
            deadline = time.monotonic() + 20
            # Until the follower is attached, a request's line may come before it: ask again meanwhile.
            while time.monotonic() < deadline and not any("/from-the-cli-test" in line for line in lines):
                assert (await client.get(f"http://127.0.0.1:{port}/from-the-cli-test")).status_code == 404
                await asyncio.sleep(0.5)
        assert any("/from-the-cli-test" in line for line in lines), lines
    finally:
        follower.terminate()
        follower.wait(timeout=10)
    assert "/from-the-cli-test" in ok(run(plane, "service", "logs", "web", "--tail", "20"))  # type: ignore[arg-type]

    stats = ok(run(plane, "service", "stats", "web"))  # type: ignore[arg-type]
    assert "MEMORY" in stats and "32.0MiB" in stats
    assert as_json(plane, "service", "stop", "web")["desired_state"] == "stopped"
    await wait_for_state(http, "web", "stopped")
    assert as_json(plane, "service", "start", "web")["desired_state"] == "running"
    await wait_for_state(http, "web", "running")
    updated = as_json(plane, "service", "update", "web", "--env", "EXTRA=1", "--cpus", "0.5")
    assert updated["generation"] == 2 and updated["cpu_limit"] == 0.5
    assert updated["environment"] == {"MODE": "cli", "TOKEN": {"secret": True}, "EXTRA": "1"}

    ports = as_json(plane, "port", "list")
    assert [(p["port"], p["service"]) for p in ports] == [(port, "web")]
    allocated = as_json(plane, "port", "allocate", "--purpose", "debugger")
    check = as_json(plane, "port", "check", str(allocated["port"]))
    assert check["available"] is False and "debugger" in check["reason"]
    ok(run(plane, "port", "release", str(allocated["port"])))  # type: ignore[arg-type]
    busy = fails(run(plane, "port", "release", str(port)))  # type: ignore[arg-type]
    assert "mhp: error: 409" in busy and "belongs to service 'web'" in busy

    external = as_json(
        plane, "service", "external", "create", "api", "http://93.184.216.34", "--description", "x"
    )
    assert external["kind"] == "external"
    assert "93.184.216.34" in ok(run(plane, "service", "external", "list"))  # type: ignore[arg-type]
    ok(run(plane, "service", "external", "update", "api", "http://93.184.216.35"))  # type: ignore[arg-type]
    ok(run(plane, "service", "external", "delete", "api"))  # type: ignore[arg-type]

    usage = run(plane, "service", "create", "bad", "--image", busybox_image, "--port", "x=abc")  # type: ignore[arg-type]
    assert usage.returncode == 2 and "NAME[=CONTAINER_PORT]" in usage.stderr
    refused = fails(run(plane, "service", "create", "bad", "--image", busybox_image, "--memory", "lots"))  # type: ignore[arg-type]
    assert refused.startswith("mhp: error: 422: ") and "memory_limit" in refused
    deleted = run(plane, "service", "delete", "web")  # type: ignore[arg-type]
    assert "deleted service web" in ok(deleted) + deleted.stderr
