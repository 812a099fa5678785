"""`mhp oauth login` (device flow through the GitHub stand-in) and `mhp proxy auth|resource`, `mhp resources`
as real subprocesses against the real control plane."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import httpx
import pytest
from jose import jwt

from tests.control_plane.conftest import ADMIN, RunningControlPlane
from tests.control_plane.test_cli import fails, mhp_argv, ok, run

from .conftest import MCP_HOST, RESOURCE, protect
from .github_fake import GitHubFake

pytestmark = [pytest.mark.auth, pytest.mark.slow]


def _approve_when_asked(github: GitHubFake, login: str, stop: threading.Event, known: set[str]) -> None:
    """Approve the device flow this login starts (not one another test left pending at the stand-in)."""
    while not stop.is_set():
        for code, device in list(github.devices.items()):
            if code not in known and device.login is None:
                github.approve_device(device.user_code, login)
                return
        time.sleep(0.05)


def _login(
    cp: RunningControlPlane, github: GitHubFake, *extra: str, login: str = "alice"
) -> tuple[dict[str, object], str]:
    stop = threading.Event()
    known = set(github.devices)
    approver = threading.Thread(target=_approve_when_asked, args=(github, login, stop, known), daemon=True)
    approver.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MHP_") and k != "ADMIN_TOKEN"}
    env.update(MHP_API_URL=cp.url, MHP_ENV_FILE=os.devnull)
    try:
        result = subprocess.run(
            [*mhp_argv(), "oauth", "login", "--json", *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        stop.set()
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), result.stderr


async def test_oauth_login_device_flow(
    http: httpx.AsyncClient, cp: RunningControlPlane, github: GitHubFake
) -> None:
    tokens, stderr = _login(cp, github)
    assert "enter the code" in stderr and f"{github.url}/login/device" in stderr
    claims = jwt.get_unverified_claims(str(tokens["access_token"]))
    assert claims["login"] == "alice" and claims["aud"] == cp.url and claims["client_id"] == "mhp-cli"
    response = await http.post("/introspect", data={"token": tokens["access_token"]}, headers=ADMIN)
    assert response.json()["active"] is True and response.json()["username"] == "alice"
    # The refresh token works for the CLI's public client.
    response = await http.post(
        "/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": "mhp-cli",
        },
    )
    assert response.status_code == 200, response.text


async def test_oauth_login_token_works_on_the_management_api_for_admin_logins_only(
    http: httpx.AsyncClient, cp: RunningControlPlane, github: GitHubFake
) -> None:
    alice, _ = _login(cp, github, login="alice")  # listed in ADMIN_GITHUB_USERS (case-insensitively)
    response = await http.get("/api/v1/tokens/", headers={"Authorization": f"Bearer {alice['access_token']}"})
    assert response.status_code == 200, response.text
    response = await http.post(
        "/api/v1/tokens/",
        json={"name": "made-by-alice"},
        headers={"Authorization": f"Bearer {alice['access_token']}"},
    )
    assert response.status_code == 201, response.text

    bob, _ = _login(cp, github, login="bob")  # signed in, but not an admin login
    response = await http.get("/api/v1/tokens/", headers={"Authorization": f"Bearer {bob['access_token']}"})
    assert response.status_code == 403
    assert "ADMIN_GITHUB_USERS" in response.json()["detail"]

    # A revoked token stops working at once.
    revoke = await http.post("/revoke", data={"token": alice["access_token"], "client_id": "mhp-cli"})
    assert revoke.status_code == 200, revoke.text
    response = await http.get("/api/v1/tokens/", headers={"Authorization": f"Bearer {alice['access_token']}"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_oauth_login_for_a_protected_resource(
    http: httpx.AsyncClient, cp: RunningControlPlane, github: GitHubFake
) -> None:
    await protect(http)
    tokens, _ = _login(cp, github, "--resource", RESOURCE)
    assert jwt.get_unverified_claims(str(tokens["access_token"]))["aud"] == RESOURCE


async def test_device_token_with_an_unknown_device_code(
    http: httpx.AsyncClient, cp: RunningControlPlane
) -> None:
    response = await http.post(
        "/device/token",
        data={
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
            "device_code": "nope",
            "client_id": "mhp-cli",
        },
    )
    assert response.status_code == 400 and response.json()["error"] == "expired_token"


async def test_proxy_auth_commands(http: httpx.AsyncClient, cp: RunningControlPlane) -> None:
    ok(run(cp, "proxy", "create", MCP_HOST, "http://127.0.0.1:9"))
    shown = json.loads(
        ok(
            run(
                cp,
                "proxy",
                "auth",
                "set",
                MCP_HOST,
                "--allow-user",
                "alice",
                "--allow-org",
                "acme",
                "--public-path",
                "/health",
                "--identity-header",
                "X-User=login",
                "--allow-origin",
                "https://claude.ai",
                "--json",
            )
        )
    )
    assert shown["allowed_users"] == ["alice"] and shown["identity_headers"] == {"X-User": "login"}
    assert shown["allowed_origins"] == ["https://claude.ai"]
    assert json.loads(ok(run(cp, "proxy", "auth", "show", MCP_HOST, "--json")))["allowed_orgs"] == ["acme"]
    resource = json.loads(ok(run(cp, "proxy", "resource", "set", MCP_HOST, "--name", "Tools", "--json")))
    assert resource["resource_name"] == "Tools" and resource["path"] == "/mcp"
    listing = ok(run(cp, "resources", "list"))
    assert f"https://{MCP_HOST}/mcp" in listing
    ok(run(cp, "proxy", "auth", "remove", MCP_HOST))
    assert "not protected" in fails(run(cp, "proxy", "auth", "show", MCP_HOST))
    usage = run(cp, "proxy", "auth", "set", MCP_HOST, "--identity-header", "nonsense")
    assert usage.returncode == 2 and "expected NAME=FIELD" in usage.stderr
    error = fails(run(cp, "proxy", "auth", "set", MCP_HOST, "--identity-header", "X-U=password"))
    assert "identity_headers" in error


async def test_oauth_keys_commands(http: httpx.AsyncClient, cp: RunningControlPlane) -> None:
    listing = json.loads(ok(run(cp, "oauth", "keys", "list", "--json")))
    [old] = [key["kid"] for key in listing if key["active"]]
    # --retire-after 0: the replaced key leaves at once (what to do with a key that leaked).
    rotated = json.loads(ok(run(cp, "oauth", "keys", "rotate", "--retire-after", "0", "--json")))
    assert [key["active"] for key in rotated] == [True] and rotated[0]["kid"] != old
    assert [key["kid"] for key in (await http.get("/jwks.json")).json()["keys"]] == [rotated[0]["kid"]]
    table = ok(run(cp, "oauth", "keys", "list"))
    assert table.split()[:4] == ["KID", "ACTIVE", "CREATED", "RETIRES"] and rotated[0]["kid"] in table
    assert "401" in fails(run(cp, "oauth", "keys", "rotate", token="acm_not-a-token"))
