"""`just shell` (python -m deploy.local.shell) loads the settings, a Redis client and the API client from the
env file; run with -c against a real control plane and Redis."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import redis.asyncio as aioredis

from tests.conftest import REPO_ROOT
from tests.harness.services import RedisServer

from .conftest import ADMIN_TOKEN, RunningControlPlane


async def test_the_shell_has_settings_redis_and_the_api_at_hand(
    running_control_plane: RunningControlPlane,
    redis_server: RedisServer,
    redis_client: aioredis.Redis,  # flushed: no tokens yet
    tmp_path: Path,
) -> None:
    env_file = tmp_path / "shell.env"
    env_file.write_text(
        f"REDIS_URL={redis_server.url}\nREDIS_PASSWORD={redis_server.password}\nADMIN_TOKEN={ADMIN_TOKEN}\n"
        f"MHP_API_URL={running_control_plane.url}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MHP_")}
    env["MHP_ENV_FILE"] = str(env_file)
    code = (
        "print(redis.ping(), settings.REDIS_URL);print(api.request('GET', '/api/v1/tokens/'), keys.proxies())"
    )
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "deploy.local.shell", "-c", code],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"True {redis_server.url}", "[] {mhp}:proxies"]
