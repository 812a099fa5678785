"""A bounded schemathesis run (property-based requests generated from our OpenAPI document) against the real
control plane, acting as the authorization server with the GitHub stand-in behind it: the management API
and the OAuth endpoints must never answer 5xx, whatever is sent. Two passes: the admin token (every
operation reachable) and an ordinary token (the tenant paths). The seed is random and printed, so a
failure names the seed that reproduces it (`--seed N`)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.control_plane.conftest import ADMIN, ADMIN_TOKEN, RunningControlPlane

# Its work grows with the number of operations (50 examples each), so it gets its own bound instead of the
# suite's per-test 120 s (meant for hangs); schemathesis itself is stopped after SCHEMATHESIS_SECONDS.
SCHEMATHESIS_SECONDS = 600
pytestmark = [pytest.mark.auth, pytest.mark.slow, pytest.mark.timeout(SCHEMATHESIS_SECONDS + 60)]

EXAMPLES_PER_OPERATION = 50


def _schemathesis(url: str, token: str, report_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            str(EXAMPLES_PER_OPERATION),
            "--header",
            f"Authorization: Bearer {token}",
            "--generation-database",
            "none",
            "--workers",
            "1",
            "--no-color",
            "--report",
            "junit",
            "--report-dir",
            str(report_dir),
        ],
        capture_output=True,
        text=True,
        timeout=SCHEMATHESIS_SECONDS,
        cwd=report_dir,  # schemathesis keeps a .schemathesis/ cache in its working directory
    )


@pytest.mark.parametrize("who", ["admin", "tenant"])
async def test_no_generated_request_gets_a_server_error(
    http: httpx.AsyncClient, cp: RunningControlPlane, who: str, tmp_path: Path
) -> None:
    token = ADMIN_TOKEN
    if who == "tenant":
        created = await http.post("/api/v1/tokens/", json={"name": "fuzz-tenant"}, headers=ADMIN)
        assert created.status_code == 201, created.text
        token = created.json()["token"]
    result = await asyncio.to_thread(_schemathesis, cp.url, token, tmp_path)
    summary = result.stdout[-4000:]
    assert result.returncode == 0, f"{summary}\n{result.stderr[-2000:]}\n{cp.service.log_tail(40)}"
    assert " passed" in summary and "generated" in summary, summary
