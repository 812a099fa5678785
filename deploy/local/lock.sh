#!/usr/bin/env bash
# `just lock [uv lock args]`: re-resolve uv.lock from pyproject.toml (e.g. `just lock --upgrade`,
# `just lock --upgrade-package redis`), then pin pixi.toml to what it chose. Runs without bootstrap (whose
# `uv sync --locked` refuses a stale lock, the very thing this fixes): it only needs uv, taken from .venv
# when there, else installed into .venv with pip first.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo_root"
venv="$repo_root/.venv"
if [ ! -x "$venv/bin/uv" ]; then
    python="${PYTHON:-python3}"
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    "$venv/bin/python" -m ensurepip --upgrade >/dev/null 2>&1 || true
    "$venv/bin/python" -m pip install --quiet uv
fi
UV_PYTHON_DOWNLOADS=never "$venv/bin/uv" lock "$@"
"$venv/bin/python" -m deploy.local.pixi_pins
echo "lock: uv.lock and pixi.toml updated; commit both (the next just recipe syncs .venv to the new lock)"
