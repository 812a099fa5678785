"""The device authorization grant (RFC 8628) behind `mhp oauth login`, attacked through the real control
plane and the GitHub stand-in: a client that did not register the device-code grant (any self-registered
client) must not start a device login, nor complete one; GitHub's device code never rests in Redis in
plaintext, and a sealed one moved onto another login does not open."""

from __future__ import annotations

import secrets

import httpx
import pytest
import redis.asyncio as aioredis

from control_plane.oauth.device_flow import device_login_context
from control_plane.oauth.server import CLI_CLIENT_ID
from control_plane.records import DeviceLogin
from shared import keys
from shared.encryption import Keyring
from shared.secrets import token_sha256
from tests.control_plane.conftest import RunningControlPlane

from .github_fake import GitHubFake
from .oauth_flow import register

pytestmark = pytest.mark.auth

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def _poll(device_code: str, client_id: str) -> dict[str, str]:
    return {"grant_type": DEVICE_GRANT, "device_code": device_code, "client_id": client_id}


async def test_a_client_without_the_device_grant_cannot_start_a_device_login(
    http: httpx.AsyncClient, cp: RunningControlPlane, github: GitHubFake
) -> None:
    client = await register(http)  # DCR: authorization_code + refresh_token only
    assert DEVICE_GRANT not in client.registration["grant_types"]
    started = len(github.devices)
    response = await http.post("/device/code", data={"client_id": client.client_id})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "unauthorized_client"
    assert len(github.devices) == started, "no device flow may start at GitHub for such a client"
    # The CLI's built-in client registered the grant.
    assert (await http.post("/device/code", data={"client_id": CLI_CLIENT_ID})).status_code == 200


async def test_a_client_without_the_device_grant_cannot_complete_a_device_login(
    http: httpx.AsyncClient, cp: RunningControlPlane, github: GitHubFake, redis_client: aioredis.Redis
) -> None:
    """A device login bound to such a client (left from before the start was checked) yields no token,
    even after the user approved it at GitHub."""
    client = await register(http)
    async with httpx.AsyncClient() as outside:
        upstream = (
            await outside.post(f"{github.url}/login/device/code", data={"client_id": github.client_id})
        ).json()
    github.approve_device(upstream["user_code"], "alice")
    device_code = secrets.token_urlsafe(32)
    digest = token_sha256(device_code)
    kek = Keyring.from_keys_b64(cp.env["KEY_ENCRYPTION_KEY_B64"])
    login = DeviceLogin(
        upstream_device_code_encrypted=kek.encrypt(
            upstream["device_code"].encode(), context=device_login_context(digest)
        ),
        client_id=client.client_id,
        scope="mcp",
        resources=[cp.url],
    )
    await redis_client.set(keys.oauth_device_login(digest), login.model_dump_json(), ex=600)
    for path in ("/device/token", "/token"):
        response = await http.post(path, data=_poll(device_code, client.client_id))
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "unauthorized_client"


async def test_githubs_device_code_is_stored_encrypted(
    http: httpx.AsyncClient, cp: RunningControlPlane, github: GitHubFake, redis_client: aioredis.Redis
) -> None:
    known = set(github.devices)
    started = await http.post("/device/code", data={"client_id": CLI_CLIENT_ID})
    assert started.status_code == 200, started.text
    [upstream_code] = set(github.devices) - known
    ours = started.json()["device_code"]
    assert upstream_code not in started.text  # GitHub's code never leaves the server
    stored_key = keys.oauth_device_login(token_sha256(ours))
    stored = await redis_client.get(stored_key)
    dump = ""
    for key in await redis_client.keys("*"):
        if await redis_client.type(key) == "string":
            dump += f"{key}={await redis_client.get(key)}\n"
    assert stored is not None and "mhp-enc:v1:" in stored
    assert upstream_code not in dump and ours not in dump
    # A sealed code moved onto another device login does not open there (it is bound to its login).
    other = await http.post("/device/code", data={"client_id": CLI_CLIENT_ID})
    other_key = keys.oauth_device_login(token_sha256(other.json()["device_code"]))
    ttl = await redis_client.ttl(other_key)
    await redis_client.set(other_key, stored, ex=ttl)
    github.approve_device(started.json()["user_code"], "alice")
    moved = await http.post("/device/token", data=_poll(other.json()["device_code"], CLI_CLIENT_ID))
    assert moved.status_code == 400 and moved.json()["error"] == "expired_token"
    # The rightful poll still completes the login.
    response = await http.post("/device/token", data=_poll(ours, CLI_CLIENT_ID))
    assert response.status_code == 200, response.text
    assert "access_token" in response.json()
