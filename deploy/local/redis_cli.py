"""`just redis-cli`: open redis-cli on the configured Redis (REDIS_URL) or the embedded one `just up` runs.

The password comes from the env file and is handed over in REDISCLI_AUTH, never on the command line, so it
does not show up in `ps` or shell history. Extra arguments go to redis-cli (`just redis-cli KEYS '*'`).
"""

from __future__ import annotations

import os
import shutil
import sys
from urllib.parse import urlsplit

from deploy.local.state_paths import state_paths
from shared.config import ENV_FILE_VARIABLE, load_settings


def redis_cli_argv(url: str, extra: list[str]) -> list[str]:
    argv = ["redis-cli", "-u", url]
    if urlsplit(url).scheme == "rediss":
        argv.append("--tls")
    return argv + extra


def main(argv: list[str]) -> int:
    paths = state_paths()
    os.environ[ENV_FILE_VARIABLE] = str(paths.env_file)
    settings = load_settings()
    if shutil.which("redis-cli") is None:
        print("redis-cli is not installed (Debian: apt-get install redis-tools)", file=sys.stderr)
        return 1
    env = dict(os.environ)
    if settings.REDIS_PASSWORD and not urlsplit(settings.effective_redis_url).password:
        env["REDISCLI_AUTH"] = settings.REDIS_PASSWORD
    args = redis_cli_argv(settings.effective_redis_url, argv[1:])
    os.execvpe(args[0], args, env)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
