#!/usr/bin/env bash
# Make sure the dev loop can run: a project venv in .venv holding exactly what uv.lock pins (runtime and dev
# dependencies, the project itself editable) and a redis-server binary. Every `just` recipe calls this first,
# so it must be cheap when nothing changed: the venv is synced only when missing or when pyproject.toml or
# uv.lock is newer than the stamp file written after the last successful sync.
# The installer is uv (pinned in uv.lock like everything else); `uv sync --locked` refuses to run when
# pyproject.toml and uv.lock disagree, so a stale lock fails here, on every machine and in CI, instead of
# quietly installing something nobody tested. `just lock` refreshes the lock.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo_root"
venv="$repo_root/.venv"
stamp="$venv/.mhp-bootstrap-stamp"

say() { printf 'bootstrap: %s\n' "$*" >&2; }
die() { printf 'bootstrap: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" = "0" ]; }

apt_install() {
    # Only as root and only with apt-get: anything else gets a one-line instruction instead.
    if is_root && command -v apt-get >/dev/null 2>&1; then
        say "installing $* with apt-get"
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >/dev/null \
            || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >/dev/null; }
    else
        die "$1 is missing: install it (Debian/Ubuntu: sudo apt-get install $*) and run again"
    fi
}

find_python() {
    # An explicit PYTHON wins; otherwise the newest python3.x >= 3.11 on PATH.
    local candidate
    for candidate in ${PYTHON:-} python3.13 python3.12 python3.11 python3 python; do
        if command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

locked_uv_version() {
    # uv installs everything else, so it is bootstrapped with pip, at the version uv.lock pins for it.
    "$1" - "$repo_root/uv.lock" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as lock:
    print(next(p["version"] for p in tomllib.load(lock)["package"] if p["name"] == "uv"))
PY
}

ensure_venv() {
    if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import sys' 2>/dev/null && [ -f "$stamp" ] \
        && [ ! "$repo_root/pyproject.toml" -nt "$stamp" ] && [ ! "$repo_root/uv.lock" -nt "$stamp" ]; then
        return 0
    fi
    [ -f "$repo_root/uv.lock" ] || die "uv.lock is missing: run 'just lock' (or restore it from git)"
    local python
    python="$(find_python)" || die "Python >= 3.11 not found on PATH: install it (e.g. apt-get install python3) and run again"
    if [ -e "$venv" ] && ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
        # Never delete it ourselves: it may belong to another user or hold something the developer wants.
        die ".venv exists but its python does not run (moved interpreter? other user's venv?): remove .venv and run again"
    fi
    if [ ! -e "$venv" ]; then
        # Debian splits venv/ensurepip into python3-venv; without it `-m venv` fails half-way.
        if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
            local minor
            minor="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
            apt_install "python${minor}-venv"
        fi
        say "creating .venv with $python"
        "$python" -m venv "$venv"
    fi
    local uv_version
    uv_version="$(locked_uv_version "$venv/bin/python")" || die "uv.lock does not pin uv (run 'just lock')"
    if [ "$("$venv/bin/uv" --version 2>/dev/null | cut -d' ' -f2)" != "$uv_version" ]; then
        say "installing uv $uv_version into .venv (the installer the lock file is read with)"
        "$venv/bin/python" -m ensurepip --upgrade >/dev/null 2>&1 || true
        "$venv/bin/python" -m pip install --quiet "uv==$uv_version"
    fi
    say "syncing .venv with uv.lock (runtime + dev dependencies, project editable)"
    # --locked: fail instead of re-resolving when pyproject.toml changed without `just lock`.
    UV_PROJECT_ENVIRONMENT="$venv" UV_PYTHON_DOWNLOADS=never "$venv/bin/uv" sync --locked --extra dev --quiet \
        || die "uv sync --locked failed: if you changed pyproject.toml, run 'just lock' and commit uv.lock"
    touch "$stamp"
}

ensure_redis() {
    command -v redis-server >/dev/null 2>&1 && return 0
    apt_install redis-server
    # Debian starts a system-wide redis on 6379 after install. We only want the binary (the dev loop runs
    # its own private, password-protected redis), and the system one would hold the port `just up` uses.
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
        say "stopping and disabling the system redis-server service Debian just started (we run our own)"
        systemctl disable --now redis-server >/dev/null 2>&1 || true
    fi
}

ensure_venv
ensure_redis
