# mcp-http-proxy dev loop. `just up` runs the system, `just test` runs every test.
# Every recipe first runs deploy/local/bootstrap.sh: it creates .venv and syncs it with uv.lock (the committed
# lock file of every runtime and dev dependency) when missing or when pyproject.toml / uv.lock changed, and
# installs redis-server (apt-get, as root) when missing. `just lock` refreshes uv.lock after a pyproject change.
# Arguments after a recipe name go to the tool underneath (`just test -k tokens -x`).
# The state dir (.data) and env file (.env) can be moved with MHP_STATE_DIR and MHP_ENV_FILE.

set positional-arguments
set shell := ["bash", "-euo", "pipefail", "-c"]

python := justfile_directory() / ".venv/bin/python"
export MHP_PYTHON := python

# List the recipes
default:
    @"{{ just_executable() }}" --list

# Create/refresh .venv and install redis-server when missing (every recipe runs this first)
bootstrap:
    @bash deploy/local/bootstrap.sh

# Run Redis (embedded when REDIS_URL is empty), control plane and data plane in the foreground; Ctrl-C stops all
# (`just up -v`: also one access line per request)
up *args: bootstrap
    exec "{{ python }}" -m deploy.local.supervisor up "$@"

# Stop a running `just up` (from another terminal)
down: bootstrap
    "{{ python }}" -m deploy.local.supervisor down

# Follow the combined log of `just up`
logs: bootstrap
    exec bash deploy/local/follow_logs.sh

# The OAuth audit, newest first (`mhp logs oauth ARGS`: --since 1h, --outcome failure, --login L, ...)
logs-oauth *args: bootstrap
    exec "{{ python }}" -m control_plane.cli.main logs oauth "$@"

# The change audit of the management API, newest first (`mhp logs audit ARGS`)
logs-audit *args: bootstrap
    exec "{{ python }}" -m control_plane.cli.main logs audit "$@"

# Follow the request log live, one line per request (`just logs-follow --host H --status 5xx`; filters: mhp logs tail -h)
logs-follow *args: bootstrap
    exec "{{ python }}" -m control_plane.cli.main logs tail -f "$@"

# Request-log errors: 5xx answers and upstream failures (`just logs-errors --since 1d`)
logs-errors *args: bootstrap
    exec "{{ python }}" -m control_plane.cli.main logs errors "$@"

# Follow the log of a Docker-managed service (`mhp service logs -f NAME`; the API from .env, as mhp reads it)
logs-service name: bootstrap
    exec "{{ python }}" -m control_plane.cli.main service logs --follow "$1"

# Run every test (real redis-server etc. are started by the fixtures)
test *args: bootstrap
    "{{ python }}" -m pytest "$@"

# Data-plane proxy tests (pytest marker `proxy`)
test-proxy *args: bootstrap
    bash deploy/local/pytest_marker.sh proxy "$@"

# OAuth / protected-resource tests (pytest marker `auth`)
test-auth *args: bootstrap
    bash deploy/local/pytest_marker.sh auth "$@"

# TLS and ACME tests (pytest marker `certificates`)
test-certificates *args: bootstrap
    bash deploy/local/pytest_marker.sh certificates "$@"

# Tests that need dockerd (pytest marker `docker`; they start their own, as root)
test-docker *args: bootstrap
    bash deploy/local/pytest_marker.sh docker "$@"

# Re-resolve uv.lock from pyproject.toml and pin pixi.toml to it (`just lock --upgrade` takes newer releases)
lock *args:
    bash deploy/local/lock.sh "$@"

# ruff check, ruff format --check, mypy (strict on shared/ and data_plane/, see pyproject)
lint: bootstrap
    #!/usr/bin/env bash
    # All three always run, so one pass shows every problem; any failure fails the recipe.
    set -uo pipefail
    status=0
    "{{ python }}" -m ruff check . || status=1
    "{{ python }}" -m ruff format --check . || status=1
    "{{ python }}" -m mypy || status=1
    # The lock must match pyproject.toml (bootstrap's `uv sync --locked` enforces it too) and pixi's pins.
    UV_PYTHON_DOWNLOADS=never "{{ justfile_directory() }}/.venv/bin/uv" lock --check --quiet || { echo "uv.lock is stale: run 'just lock'"; status=1; }
    exit "$status"

# Format the code and apply ruff's safe fixes
fmt: bootstrap
    "{{ python }}" -m ruff format .
    "{{ python }}" -m ruff check --fix .

# Every test with pytest's verbose output (each test's name and outcome, the reason of every skip)
test-verbose *args: bootstrap
    "{{ python }}" -m pytest -vv -rA "$@"

# The `mhp` CLI from .venv (`just mhp proxy list`); or put .venv/bin on PATH and call `mhp` directly
mhp *args: bootstrap
    "{{ justfile_directory() }}/.venv/bin/mhp" "$@"

# Interactive Python with `settings`, a `redis` client, `keys` and the `api` client loaded
shell *args: bootstrap
    "{{ python }}" -m deploy.local.shell "$@"

# redis-cli on the configured (or embedded) Redis, password from the env file
redis-cli *args: bootstrap
    exec "{{ python }}" -m deploy.local.redis_cli "$@"

# Benchmarks (tests/bench); not part of `just test`. Proxies vs peers, then the request-log rows (--no-log-rows)
bench *args: bootstrap
    "{{ python }}" -m tests.bench.run "$@"

# Request-log index: indexer throughput, search and stats latency, Redis memory per million entries
bench-logs *args: bootstrap
    "{{ python }}" -m tests.bench.log_index "$@"

# Config at scale: change-live latency with 10,000 proxies / 20,000 routes, concurrent creates, data-plane RSS
bench-config *args: bootstrap
    "{{ python }}" -m tests.bench.config_scale "$@"
