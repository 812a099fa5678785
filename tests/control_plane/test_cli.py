"""`mhp` as a real subprocess against `python -m control_plane` as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis

from tests.harness.services import RedisServer, free_port

from .conftest import ADMIN_TOKEN, RunningControlPlane

pytestmark = pytest.mark.slow

MHP_SCRIPT = Path(sys.executable).parent / "mhp"


@pytest.fixture
def cp(running_control_plane: RunningControlPlane, redis_server: RedisServer) -> RunningControlPlane:
    """The running control plane over an empty Redis (sync tests: they block on subprocesses)."""
    with redis.Redis.from_url(redis_server.url, password=redis_server.password) as client:
        client.flushall()
    return running_control_plane


def mhp_argv() -> list[str]:
    # The installed console script when present (what users run), else the same entry point via -m.
    return [str(MHP_SCRIPT)] if MHP_SCRIPT.exists() else [sys.executable, "-m", "control_plane.cli.main"]


def run(
    cp: RunningControlPlane,
    *args: str,
    token: str | None = ADMIN_TOKEN,
    env_overrides: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MHP_") and k != "ADMIN_TOKEN"}
    env.update(MHP_API_URL=cp.url, MHP_ENV_FILE=os.devnull)
    if token is not None:
        env["MHP_TOKEN"] = token
    env.update(env_overrides or {})
    return subprocess.run([*mhp_argv(), *args], env=env, capture_output=True, text=True, timeout=60)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    )
    return result.stdout


def fails(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert result.returncode == code, (
        f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    )
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mhp: error: ")
    return lines[0]


def test_cli_tokens(cp: RunningControlPlane) -> None:
    created = json.loads(ok(run(cp, "tokens", "create", "alice", "--email", "alice@example.com", "--json")))
    assert created["name"] == "alice" and created["token"].startswith("acm_")
    table = ok(run(cp, "tokens", "create", "bob"))
    assert "TOKEN" in table and "acm_" in table

    listing = ok(run(cp, "tokens", "list"))
    lines = listing.strip().splitlines()
    assert lines[0].split()[:2] == ["NAME", "CERT"]
    assert [line.split()[0] for line in lines[1:]] == ["alice", "bob"]
    assert "acm_" not in listing
    # Columns are aligned: the email column starts at the same offset on every row.
    assert lines[1].index("alice@example.com") == lines[0].index("CERT EMAIL")

    assert json.loads(ok(run(cp, "tokens", "show", "alice", "--json")))["cert_email"] == "alice@example.com"
    ok(run(cp, "tokens", "update", "alice", "--email", "ops@example.com"))
    assert "ops@example.com" in ok(run(cp, "--json", "tokens", "show", "alice"))

    # The created token works as MHP_TOKEN and sees only itself.
    mine = json.loads(ok(run(cp, "tokens", "list", "--json", token=created["token"])))
    assert [t["name"] for t in mine] == ["alice"]
    assert "403" in fails(run(cp, "tokens", "show", "bob", token=created["token"]))

    ok(run(cp, "tokens", "delete", "alice"))
    assert "404" in fails(run(cp, "tokens", "show", "alice"))
    assert "409" in fails(run(cp, "tokens", "create", "bob"))
    assert "name" in fails(run(cp, "tokens", "create", "bad name"))


def test_cli_proxy_and_route(cp: RunningControlPlane) -> None:
    created = json.loads(
        ok(
            run(
                cp,
                "proxy",
                "create",
                "App.Example.com",
                "http://127.0.0.1:8080",
                "--no-https",
                "--set-request-header",
                "X-Env=test",
                "--json",
            )
        )
    )
    assert created["hostname"] == "app.example.com" and created["enable_https"] is False
    assert created["request_headers_set"] == {"X-Env": "test"}
    listing = ok(run(cp, "proxy", "list"))
    assert "app.example.com" in listing and "http://127.0.0.1:8080" in listing
    shown = ok(run(cp, "proxy", "show", "app.example.com"))
    assert "request_headers_set" in shown and "X-Env" in shown
    updated = json.loads(
        ok(
            run(
                cp,
                "proxy",
                "update",
                "app.example.com",
                "--no-enabled",
                "--target-url",
                "http://127.0.0.1:9090",
                "--no-redirect-https",
                "--hsts",
                "86400",
                "--json",
            )
        )
    )
    assert updated["enabled"] is False and updated["target_url"] == "http://127.0.0.1:9090"
    assert updated["request_headers_set"] == {"X-Env": "test"}
    assert updated["redirect_http_to_https"] is False and updated["hsts_max_age_seconds"] == 86400
    assert "hsts_max_age_seconds" in fails(run(cp, "proxy", "update", "app.example.com", "--hsts", "-1"))
    assert "hostname" in fails(run(cp, "proxy", "create", "*.com", "http://127.0.0.1:1"))
    assert "target_url" in fails(run(cp, "proxy", "create", "b.example.com", "ftp://x"))
    assert "nothing to update" in fails(run(cp, "proxy", "update", "app.example.com"))

    route = json.loads(
        ok(
            run(
                cp,
                "route",
                "create",
                "^/api/v[12]/",
                "--regex",
                "--id",
                "api",
                "--to-proxy",
                "app.example.com",
                "--method",
                "get",
                "--priority",
                "900",
                "--json",
            )
        )
    )
    assert (
        route["match"] == "regex"
        and route["methods"] == ["GET"]
        and route["target_proxy"] == "app.example.com"
    )
    ok(
        run(
            cp,
            "route",
            "create",
            "/static",
            "--to-url",
            "http://127.0.0.1:7000",
            "--id",
            "static",
            "--proxy",
            "app.example.com",
        )
    )
    rows = ok(run(cp, "route", "list")).strip().splitlines()
    assert [row.split()[0] for row in rows] == ["ID", "api", "static"]
    assert "regular expression" in fails(run(cp, "route", "create", "/(x", "--regex", "--to-url", "http://h"))
    assert "target_proxy" in fails(run(cp, "route", "create", "/", "--to-proxy", "missing.example.com"))
    assert "one of the arguments" in run(cp, "route", "create", "/").stderr  # argparse usage error, exit 2

    changed = json.loads(
        ok(run(cp, "route", "update", "static", "--priority", "950", "--no-enabled", "--json"))
    )
    assert changed["priority"] == 950 and changed["enabled"] is False
    assert changed["scope"] == "proxies" and changed["target_url"] == "http://127.0.0.1:7000"
    assert "static" in ok(run(cp, "route", "show", "static"))

    ok(run(cp, "route", "delete", "static"))
    assert "404" in fails(run(cp, "route", "show", "static"))
    ok(run(cp, "proxy", "delete", "app.example.com"))
    assert json.loads(ok(run(cp, "proxy", "list", "--json"))) == []


def test_cli_auth_and_connection_errors(cp: RunningControlPlane, tmp_path: Path) -> None:
    assert "401" in fails(run(cp, "tokens", "list", token="acm_wrong"))
    dead = f"http://127.0.0.1:{free_port()}"
    line = fails(run(cp, "tokens", "list", env_overrides={"MHP_API_URL": dead}), code=3)
    assert "cannot reach the control plane" in line
    # `--url host:port` (the form --help shows) means http://host:port.
    bare = cp.url.removeprefix("http://")
    assert json.loads(ok(run(cp, "--url", bare, "tokens", "list", "--json"))) == []

    # With no MHP_* variables the CLI falls back to the env file's API_PORT and ADMIN_TOKEN.
    env_file = tmp_path / "test.env"
    env_file.write_text(f"API_PORT={urlsplit(cp.url).port}\nADMIN_TOKEN={ADMIN_TOKEN}\n")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MHP_") and k not in ("ADMIN_TOKEN", "API_PORT")
    }
    env["MHP_ENV_FILE"] = str(env_file)
    result = subprocess.run(
        [*mhp_argv(), "tokens", "list", "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_cli_oauth_clients(cp: RunningControlPlane) -> None:
    created = json.loads(
        ok(
            run(
                cp,
                "oauth",
                "client",
                "create",
                "Partner tool",
                "--redirect-uri",
                "https://partner.example/callback",
                "--redirect-uri",
                "http://127.0.0.1/callback",
                "--json",
            )
        )
    )
    assert created["client_id"].startswith("mhp_pre_") and created["client_secret"]
    assert created["redirect_uris"] == ["https://partner.example/callback", "http://127.0.0.1/callback"]
    spa = ["oauth", "client", "create", "SPA", "--redirect-uri", "https://a.example/cb", "--public"]
    public = json.loads(ok(run(cp, *spa, "--json")))
    assert public["client_secret"] is None and public["token_endpoint_auth_method"] == "none"
    listing = ok(run(cp, "oauth", "client", "list"))
    assert "Partner tool" in listing and created["client_id"] in listing
    assert created["client_secret"] not in listing
    assert "https" in fails(
        run(cp, "oauth", "client", "create", "Bad", "--redirect-uri", "http://partner.example/cb")
    )
    ok(run(cp, "oauth", "client", "delete", created["client_id"]))
    assert "not found" in fails(run(cp, "oauth", "client", "show", created["client_id"]))
