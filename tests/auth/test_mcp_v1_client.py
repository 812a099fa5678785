"""The MCP Python SDK 1.x client (`mcp<2`) through the real data plane to the real MCP SDK server: the
1.x line is what most deployed MCP clients still run. It cannot share a venv with the 2.x SDK, so a
session fixture builds its own venv once, in a cache dir keyed by the version spec (repeat runs reuse it),
and tests/auth/mcp_v1_client.py runs the whole OAuth flow + `tools/call` there and prints JSON.
If the venv cannot be built (no PyPI) the test fails with pip's output; it never skips silently.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import redis.asyncio as aioredis

from tests.control_plane.conftest import RunningControlPlane
from tests.data_plane.conftest import DataPlane

from .conftest import data_plane_caught_up, protect

pytestmark = [pytest.mark.auth, pytest.mark.slow]

MCP1_SPEC = "mcp>=1.10,<2"
CLIENT_SCRIPT = Path(__file__).with_name("mcp_v1_client.py")


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mhp-tests"


@pytest.fixture(scope="session")
def mcp1_python() -> Path:
    """The python of a venv holding the 1.x SDK; built on first use, reused while the spec is the same."""
    key = hashlib.sha256(f"{MCP1_SPEC}|{sys.version_info[:2]}".encode()).hexdigest()[:12]
    venv = _cache_root() / f"mcp1-venv-{key}"
    python = venv / "bin" / "python"
    # The marker is written last, so a half-built venv (interrupted pip) is rebuilt, not trusted.
    marker = venv / ".mhp-complete"
    if not (marker.exists() and python.exists()):
        _build_venv(venv, python)
        marker.write_text(MCP1_SPEC)
    version = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('mcp'))"],
        capture_output=True,
        text=True,
    )
    assert version.returncode == 0 and version.stdout.startswith("1."), version
    return python


def _build_venv(venv: Path, python: Path) -> None:
    venv.parent.mkdir(parents=True, exist_ok=True)
    build = subprocess.run(
        [sys.executable, "-m", "venv", "--clear", str(venv)], capture_output=True, text=True
    )
    assert build.returncode == 0, f"python -m venv failed:\n{build.stderr}"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", MCP1_SPEC],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, (
        f"pip install {MCP1_SPEC!r} failed (needs PyPI):\n{install.stdout}\n{install.stderr}"
    )


@pytest.fixture
async def protected_server(
    http: httpx.AsyncClient,
    redis_client: aioredis.Redis,
    auth_data_plane: DataPlane,
    mcp_upstream: str,
) -> str:
    """The MCP endpoint as clients see it: the data plane's port, proxy `127.0.0.1` protected for alice."""
    await protect(http, "127.0.0.1", users=["alice"], target_url=mcp_upstream)
    await data_plane_caught_up(redis_client, auth_data_plane)
    return f"http://127.0.0.1:{auth_data_plane.http_port}/mcp"


async def test_sdk_v1_client_full_flow(
    mcp1_python: Path, cp: RunningControlPlane, protected_server: str
) -> None:
    # Run off the event loop: the servers this test talks to live in other processes, but the
    # fixtures' own clients share this loop.
    run = await asyncio.to_thread(
        subprocess.run,
        [str(mcp1_python), str(CLIENT_SCRIPT), protected_server],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, f"mcp 1.x client failed:\n{run.stdout}\n{run.stderr}"
    result = json.loads(run.stdout.strip().splitlines()[-1])

    assert result["is_error"] is False, result
    # The data plane verified alice's token, stripped it, and told the upstream who she is.
    assert result["whoami"] == {
        "user": "alice",
        "scopes": "mcp",
        "authorization_reached_upstream": False,
        "forged": None,
    }
    # Dynamic registration at our AS, and the authorization went to our issuer with the resource bound.
    assert str(result["client_id"]).startswith("mhp_")
    assert result["has_access_token"] and result["has_refresh_token"]
    [authorization_url] = result["authorization_urls"]
    assert authorization_url.startswith(cp.url + "/authorize?")
    assert "code_challenge_method=S256" in authorization_url
    assert "resource=" + quote(protected_server, safe="") in authorization_url
    assert result["code_issuer"] == cp.url
