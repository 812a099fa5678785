"""`mhp cert ...` as a real subprocess against `python -m control_plane` (a real subprocess with its
certificate worker on), issuing from Pebble through the test's HTTP-01 responder."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.control_plane.conftest import control_plane_env, start_control_plane
from tests.harness.pebble import Pebble
from tests.harness.services import RedisServer, ServiceProcess, free_port

from .conftest import ADMIN_TOKEN, KEK_B64, Responder

pytestmark = [pytest.mark.certificates, pytest.mark.slow]

MHP_SCRIPT = Path(sys.executable).parent / "mhp"


@pytest.fixture
def control_plane(
    redis_server: RedisServer, pebble: Pebble, redis_client: aioredis.Redis, tmp_path: Path
) -> Iterator[str]:
    port = free_port()
    env = control_plane_env(redis_server, port)
    env.update(
        KEY_ENCRYPTION_KEY_B64=KEK_B64,
        ACME_DIRECTORY_URL=pebble.directory_url,
        ACME_STAGING_URL=pebble.directory_url.replace("127.0.0.1", "localhost"),
        ACME_CA_BUNDLE=str(pebble.ca_bundle),
        ACME_EMAIL="cli@example.com",
        ACME_WORKER_ENABLED="true",
    )
    service: ServiceProcess = start_control_plane(env, port, tmp_path)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        service.stop()


async def mhp(url: str, *args: str) -> tuple[int, str, str]:
    argv = [str(MHP_SCRIPT)] if MHP_SCRIPT.exists() else [sys.executable, "-m", "control_plane.cli.main"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MHP_") and k != "ADMIN_TOKEN"}
    env.update(MHP_API_URL=url, MHP_TOKEN=ADMIN_TOKEN, MHP_ENV_FILE=os.devnull)
    process = await asyncio.create_subprocess_exec(
        *argv, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def mhp_json(url: str, *args: str) -> Any:
    code, out, err = await mhp(url, *args, "--json")
    assert code == 0, err
    return json.loads(out) if out.strip() else None


async def wait_active(url: str, name: str) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    status: dict[str, Any] = {}
    while loop.time() < deadline:
        status = await mhp_json(url, "cert", "status", name)
        if status["status"] != "pending":
            return status
        await asyncio.sleep(0.3)
    raise AssertionError(f"{name} still pending: {status}")


async def test_cert_commands_end_to_end(control_plane: str, responder: Responder) -> None:
    url = control_plane
    created = await mhp_json(url, "cert", "create", "one", "one.example.com")
    assert created["status"] == "pending" and created["domains"] == ["one.example.com"]
    multi = await mhp_json(
        url, "cert", "create-multi", "two", "a.two.example.com", "b.two.example.com", "--staging"
    )
    assert multi["environment"] == "staging" and len(multi["domains"]) == 2

    assert (await wait_active(url, "one"))["status"] == "active"
    assert (await wait_active(url, "two"))["status"] == "active"

    code, table, _ = await mhp(url, "cert", "list")
    assert code == 0
    assert "one.example.com" in table and "active" in table and "staging" in table

    shown = await mhp_json(url, "cert", "show", "one")
    assert shown["serial"] and "private_key_encrypted" not in shown
    code, text, _ = await mhp(url, "cert", "show", "one")
    assert code == 0 and "PRIVATE KEY" not in text and shown["serial"] in text

    renewed = await mhp_json(url, "cert", "renew", "one")
    assert renewed["cert_name"] == "one"
    converted = await mhp_json(url, "cert", "convert-to-production", "two")
    assert converted["environment"] == "production"

    # API errors are one readable line and exit status 1.
    code, _, err = await mhp(url, "cert", "create", "three", "one.example.com")
    assert code == 1 and "409" in err and "one.example.com" in err
    code, _, err = await mhp(url, "cert", "create", "wild", "*.example.com")
    assert code == 1 and "422" in err and "wildcard" in err
    code, _, err = await mhp(url, "cert", "status", "missing")
    assert code == 1 and "404" in err

    code, _, err = await mhp(url, "cert", "delete", "one")
    assert code == 0 and "deleted certificate one" in err
    names = [c["cert_name"] for c in await mhp_json(url, "cert", "list")]
    assert names == ["two"]
