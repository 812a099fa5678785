"""`just shell`: an interactive Python with the deployment at hand, for poking at a running system.

Preloaded: `settings` (from the env file `just up` uses), `redis` (a synchronous Redis client on the
configured or embedded Redis, decode_responses=True), `keys` (shared.keys: every key name), and `api` (the
`mhp` CLI's API client: `api.request("GET", "/api/v1/proxy/targets/")`, with ADMIN_TOKEN unless MHP_TOKEN
says otherwise). `python -m deploy.local.shell -c CODE` runs CODE with the same names instead (scripts,
tests).
"""

from __future__ import annotations

import code
import os
import sys

import redis as redis_sync

from control_plane.cli.client import ApiClient, resolve_endpoint
from deploy.local.state_paths import state_paths
from shared import keys
from shared.config import ENV_FILE_VARIABLE, load_settings

BANNER = """mcp-http-proxy shell
  settings  the configuration (.env)        redis  a Redis client on the configured Redis
  keys      shared.keys (every key name)    api    api.request("GET", "/api/v1/proxy/targets/")"""


def namespace() -> dict[str, object]:
    os.environ.setdefault(ENV_FILE_VARIABLE, str(state_paths().env_file))
    settings = load_settings()
    client = redis_sync.Redis.from_url(
        settings.effective_redis_url, password=settings.REDIS_PASSWORD or None, decode_responses=True
    )
    return {
        "settings": settings,
        "redis": client,
        "keys": keys,
        "api": ApiClient(resolve_endpoint(None, None)),
    }


def main(argv: list[str]) -> int:
    names = namespace()
    if len(argv) > 2 and argv[1] == "-c":
        exec(compile(argv[2], "<just shell -c>", "exec"), names)  # the developer's own code
        return 0
    code.interact(banner=BANNER, local=names, exitmsg="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
