"""Data-plane limits are settings: documented, validated at start-up, and refused with the variable named."""

from __future__ import annotations

import os
import subprocess
import sys

from data_plane.limits import Limits
from shared.config import load_settings
from tests.conftest import REPO_ROOT


def test_limits_come_from_settings() -> None:
    settings = load_settings(DP_MAX_HEADER_BYTES=1234, DP_SHUTDOWN_DRAIN_SECONDS=1.5)
    limits = Limits.from_settings(settings)
    assert limits.max_header_bytes == 1234
    assert limits.shutdown_drain_seconds == 1.5


def test_a_bad_limit_stops_the_data_plane_with_the_variable_named() -> None:
    env = {**os.environ, "DP_MAX_CONNECTIONS": "-5", "MHP_ENV_FILE": os.devnull}
    result = subprocess.run(
        [sys.executable, "-m", "data_plane"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "DP_MAX_CONNECTIONS" in result.stderr
