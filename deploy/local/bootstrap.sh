#!/usr/bin/env bash
# Make sure the dev loop can run: a project venv in .venv with the package installed (editable, with the
# dev extra) and a redis-server binary. Every `just` recipe calls this first, so it must be cheap when
# nothing changed: the venv is (re)installed only when missing or when pyproject.toml is newer than the
# stamp file written after the last successful install.
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

ensure_venv() {
    if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import sys' 2>/dev/null \
        && [ -f "$stamp" ] && [ ! "$repo_root/pyproject.toml" -nt "$stamp" ]; then
        return 0
    fi
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
    say "installing mcp-http-proxy[dev] into .venv (pyproject.toml changed or first run)"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -e "$repo_root[dev]"
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
