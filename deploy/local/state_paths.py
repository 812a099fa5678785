"""Where the local dev loop keeps its files.

Everything lives under one state directory (`.data` in the working directory, or MHP_STATE_DIR) and the env
file is `.env` (or MHP_ENV_FILE, the variable shared.config reads too). Tests point both at a temp dir so a
developer's files are never touched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from shared.config import ENV_FILE_VARIABLE

STATE_DIR_VARIABLE = "MHP_STATE_DIR"


@dataclass(frozen=True, slots=True)
class StatePaths:
    state_dir: Path
    env_file: Path

    @property
    def redis_dir(self) -> Path:
        return self.state_dir / "redis"

    @property
    def redis_config(self) -> Path:
        return self.redis_dir / "redis.conf"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def combined_log(self) -> Path:
        return self.logs_dir / "combined.log"

    @property
    def pids_file(self) -> Path:
        return self.state_dir / "up.pids"


def state_paths(environ: dict[str, str] | None = None) -> StatePaths:
    """Absolute paths, resolved once, so children started from another cwd see the same files."""
    env = os.environ if environ is None else environ
    state_dir = Path(env.get(STATE_DIR_VARIABLE) or ".data")
    # shared.config treats an empty MHP_ENV_FILE as "no file"; here we need a file to write, so default it.
    env_file = Path(env.get(ENV_FILE_VARIABLE) or ".env")
    return StatePaths(state_dir=state_dir.resolve(), env_file=env_file.resolve())
