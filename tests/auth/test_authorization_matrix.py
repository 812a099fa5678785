"""The README's authorization matrix ("Security model / Who can do what"), performed cell by cell against
the real control plane (a `python -m control_plane` process acting as the authorization server).

The table is read from README.md, so the documentation and the behaviour cannot drift apart; a test also
checks that every management-API operation in the OpenAPI document has a row. Each cell runs in a world of
its own (fresh tokens and objects with unique names), so a DELETE in one cell never changes another cell's
answer. OAuth callers are walked over every row too: a CLI-client token of an ADMIN_GITHUB_USERS login acts
as the admin, another login's gets 403, and a token issued to any other client gets 401."""

from __future__ import annotations

import itertools
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from control_plane.oauth.api_access import CLI_CLIENT_ID
from control_plane.oauth.consent import consent_id
from control_plane.oauth.state_store import OAuthState
from control_plane.records import OAuthConsent
from shared import keys
from tests.conftest import REPO_ROOT
from tests.control_plane.conftest import ADMIN, RunningControlPlane, bearer

from .insider_tokens import active_signing_keys, management_token
from .oauth_flow import register

pytestmark = [pytest.mark.auth, pytest.mark.slow]

PUBLIC = "http://93.184.216.34"
# Services in the matrix never run: the control plane's engine socket does not exist (auth_control_plane),
# so they stay pending; every row is about who may ask, which needs no engine.
MATRIX_IMAGE = "mhp-test/busybox:matrix"
COLUMNS = ("admin", "owner", "other token", "no token")


@dataclass(frozen=True)
class Row:
    method: str
    path: str
    cells: dict[str, str]


def readme_matrix() -> list[Row]:
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("### Who can do what", 1)[1].split("\n### ", 1)[0]
    rows: list[Row] = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6 or cells[0] in ("method", "---"):
            continue
        method, path = cells[0], cells[1].strip("`")
        rows.append(Row(method, path, dict(zip(COLUMNS, cells[2:], strict=True))))
    assert rows, "README.md has no authorization matrix"
    return rows


ROWS = readme_matrix()
_counter = itertools.count()


@dataclass
class World:
    """Per cell: an owner token with one object of every kind, and an other token with its own proxy."""

    n: str
    owner: dict[str, str]
    other: dict[str, str]
    names: dict[str, str]

    def principal(self, column: str) -> dict[str, str]:
        return {"admin": ADMIN, "owner": self.owner, "other token": self.other, "no token": {}}[column]

    def owner_of(self, column: str) -> str:
        return {"admin": "admin", "owner": f"owner-{self.n}", "other token": f"other-{self.n}"}[column]


async def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code in (200, 201, 204), response.text
    return response.json() if response.content else {}


async def dead_letter(cp: RunningControlPlane, event: dict[str, str]) -> str:
    """An ACME workflow event given up on, as the stream consumer leaves one; returns its item id."""
    client = aioredis.Redis.from_url(
        cp.env["REDIS_URL"], password=cp.env["REDIS_PASSWORD"], decode_responses=True
    )
    try:
        letter = {"original_id": "1-0", "event": json.dumps(event), "error": "matrix", "attempts": "5"}
        return f"dead:{await client.xadd(keys.workflow_dead_letters(keys.acme_workflow_stream()), letter)}"
    finally:
        await client.aclose()


async def remembered_consent(cp: RunningControlPlane, n: str) -> str:
    """A user's remembered consent, as the consent page leaves one; returns its id."""
    client = aioredis.Redis.from_url(
        cp.env["REDIS_URL"], password=cp.env["REDIS_PASSWORD"], decode_responses=True
    )
    login, client_id, scopes, resources = (
        f"user-{n}",
        "matrix-client",
        ["mcp"],
        [f"https://p-{n}.example.net"],
    )
    now = time.time()
    record = OAuthConsent(
        consent_id=consent_id(login, client_id, scopes, resources),
        login=login,
        client_id=client_id,
        client_name="matrix",
        scopes=scopes,
        resources=resources,
        created_at=now,
        expires_at=now + 3600,
    )
    try:
        await OAuthState(client).put_consent(record)
    finally:
        await client.aclose()
    return record.consent_id


async def build_world(http: httpx.AsyncClient, cp: RunningControlPlane) -> World:
    n = f"{next(_counter)}x{secrets.token_hex(2)}"
    tokens = {}
    for role in ("owner", "other"):
        made = await _ok(await http.post("/api/v1/tokens/", json={"name": f"{role}-{n}"}, headers=ADMIN))
        tokens[role] = bearer(made["token"])
    host, spare_host, other_host = f"p-{n}.example.net", f"s-{n}.example.net", f"q-{n}.example.net"
    for who, name in ((tokens["owner"], host), (tokens["owner"], spare_host), (tokens["other"], other_host)):
        proxy = {"hostname": name, "target_url": PUBLIC, "enable_https": False}
        await _ok(await http.post("/api/v1/proxy/targets/", json=proxy, headers=who))
    route = {
        "id": f"r-{n}",
        "path_pattern": "/x",
        "target_url": PUBLIC,
        "scope": "proxies",
        "proxy_hostnames": [host],
    }
    await _ok(await http.post("/api/v1/routes/", json=route, headers=tokens["owner"]))
    cert = {"cert_name": f"c-{n}", "domains": [host], "environment": "staging"}  # convertible
    await _ok(await http.post("/api/v1/certificates/", json=cert, headers=tokens["owner"]))
    await _ok(
        await http.put(
            f"/api/v1/proxy/targets/{host}/auth", json={"allowed_users": ["alice"]}, headers=tokens["owner"]
        )
    )
    await _ok(
        await http.put(
            f"/api/v1/proxy/targets/{host}/resource", json={"path": "/mcp"}, headers=tokens["owner"]
        )
    )
    client = await _ok(
        await http.post(
            "/api/v1/oauth/clients/",
            json={"client_name": f"pre {n}", "redirect_uris": ["https://app.example/cb"]},
            headers=ADMIN,
        )
    )
    service = {"name": f"s-{n}", "image": MATRIX_IMAGE, "network_mode": "none", "pull": "never"}
    await _ok(await http.post("/api/v1/services/", json=service, headers=tokens["owner"]))
    external = {"name": f"e-{n}", "url": PUBLIC}
    await _ok(await http.post("/api/v1/services/external/", json=external, headers=tokens["owner"]))
    port = await _ok(await http.post("/api/v1/ports/", json={"purpose": "matrix"}, headers=tokens["owner"]))
    names = {
        "name": f"owner-{n}",
        "service_name": f"s-{n}",
        "external_name": f"e-{n}",
        "port": str(port["port"]),
        "hostname": host,
        "route_id": f"r-{n}",
        "cert_name": f"c-{n}",
        "client_id": client["client_id"],
        "spare_host": spare_host,
        "other_host": other_host,
        "workflow": "acme",
        "item": await dead_letter(cp, {"reason": "renew", "cert_name": f"c-{n}"}),
        "consent_id": await remembered_consent(cp, n),
    }
    return World(n, tokens["owner"], tokens["other"], names)


def _create_body(path: str, world: World, column: str) -> dict[str, Any]:
    """A valid create for the caller (its own names: the other token's proxy for 'other token')."""
    # The owner's spare proxy has no certificate yet; the other token names its own proxy.
    own_host = world.names["other_host"] if column == "other token" else world.names["spare_host"]
    unique = secrets.token_hex(3)
    if path == "/api/v1/tokens/":
        return {"name": f"made-{unique}"}
    if path == "/api/v1/proxy/targets/":
        return {"hostname": f"new-{unique}.example.net", "target_url": PUBLIC, "enable_https": False}
    if path == "/api/v1/routes/":
        return {"path_pattern": "/y", "target_url": PUBLIC, "scope": "proxies", "proxy_hostnames": [own_host]}
    if path == "/api/v1/certificates/":
        return {
            "cert_name": f"made-{unique}",
            "domains": [own_host if column != "admin" else f"a-{unique}.example.net"],
        }
    if path == "/api/v1/oauth/clients/":
        return {"client_name": "made", "redirect_uris": ["https://app.example/cb"]}
    if path == "/api/v1/services/":
        return {"name": f"made-{unique}", "image": MATRIX_IMAGE, "network_mode": "none", "pull": "never"}
    if path == "/api/v1/services/external/":
        return {"name": f"made-{unique}", "url": PUBLIC}
    if path == "/api/v1/ports/":
        return {"purpose": "matrix"}
    raise AssertionError(f"no create body for {path}")


def _update_body(path: str) -> dict[str, Any] | None:
    if path == "/api/v1/tokens/{name}":
        return {"cert_email": "ops@example.net"}
    if path == "/api/v1/proxy/targets/{hostname}":
        return {"target_url": PUBLIC, "enable_https": False}
    if path == "/api/v1/proxy/targets/{hostname}/auth":
        return {"allowed_users": ["bob"]}
    if path == "/api/v1/proxy/targets/{hostname}/resource":
        return {"path": "/v2/mcp"}
    if path == "/api/v1/routes/{route_id}":
        return {"path_pattern": "/z", "target_url": PUBLIC, "scope": "proxies", "proxy_hostnames": ["HOST"]}
    if path == "/api/v1/services/{service_name}":
        return {"image": MATRIX_IMAGE, "network_mode": "none", "pull": "never", "memory_limit": "64m"}
    if path == "/api/v1/services/external/{external_name}":
        return {"url": PUBLIC, "description": "moved"}
    return None


async def perform(
    http: httpx.AsyncClient, row: Row, world: World, headers: dict[str, str], column: str
) -> httpx.Response:
    path = row.path
    for name, value in world.names.items():
        path = path.replace("{" + name + "}", value)
    body: dict[str, Any] | None = None
    params: dict[str, str] = {}
    if row.path == "/api/v1/oauth/keys/rotate":
        body = {}  # the default retirement: tokens signed before keep verifying
    elif row.path == "/api/v1/oauth/consents/" and row.method == "DELETE":
        params = {"login": "nobody"}  # revoking needs a filter
    elif row.method == "POST" and row.path.endswith("/"):
        body = _create_body(row.path, world, column)
    elif row.method == "PATCH":
        body = (
            {"memory_limit": "64m"}
            if row.path.startswith("/api/v1/services/")
            else {"read_timeout_seconds": 30}
        )
    elif row.method == "PUT":
        body = _update_body(row.path)
        if body is not None and "proxy_hostnames" in body:
            body["proxy_hostnames"] = [world.names["hostname"]]
    return await http.request(row.method, path, json=body, params=params, headers=headers)


def check(row: Row, column: str, expected: str, response: httpx.Response, world: World) -> None:
    got = f"{response.status_code} {response.text[:300]}"
    where = f"{row.method} {row.path} as {column}: expected {expected}, got {got}"
    if expected.isdigit():
        assert response.status_code == int(expected), where
        return
    assert response.status_code in (200, 201, 202, 204), where
    if expected in ("all", "own"):
        items = response.json()
        if isinstance(items, dict) and "next_cursor" in items:
            items = items["items"]  # a page of a log search
        assert isinstance(items, list), where
        owners = {_owner_of(item) for item in items}
        if expected == "own":
            assert owners <= {world.owner_of(column)}, where
        if column in ("admin", "owner"):
            assert world.owner_of("owner") in owners, where


def _owner_of(item: dict[str, Any]) -> str:
    # Objects carry their owner; a token's record is its own (its name).
    return str(item["owner"] if "owner" in item else item["name"])


CELLS = [(row, column) for row in ROWS for column in COLUMNS]


@pytest.mark.parametrize(("row", "column"), CELLS, ids=[f"{r.method} {r.path} [{c}]" for r, c in CELLS])
async def test_matrix_cell(http: httpx.AsyncClient, cp: RunningControlPlane, row: Row, column: str) -> None:
    world = await build_world(http, cp)
    response = await perform(http, row, world, world.principal(column), column)
    check(row, column, row.cells[column], response, world)


async def test_oauth_callers_over_every_row(
    http: httpx.AsyncClient, cp: RunningControlPlane, redis_client: aioredis.Redis
) -> None:
    signer = await active_signing_keys(cp, http, redis_client)
    dcr_client = await register(http)

    def token(client_id: str, login: str) -> dict[str, str]:
        return bearer(management_token(cp, signer, client_id=client_id, login=login))

    callers = {
        "admin": token(CLI_CLIENT_ID, "alice"),  # alice is in ADMIN_GITHUB_USERS
        "403": token(CLI_CLIENT_ID, "carol"),
        "401": token(dcr_client.client_id, "alice"),
    }
    for row in ROWS:
        for expected, headers in callers.items():
            world = await build_world(http, cp)
            # A public row (no token needed) answers every caller alike.
            public = row.cells["no token"] == "yes"
            cell = row.cells["admin"] if expected == "admin" or public else expected
            response = await perform(http, row, world, headers, "admin")
            check(row, "admin", cell, response, world)


async def test_every_management_operation_has_a_row(http: httpx.AsyncClient, cp: RunningControlPlane) -> None:
    document = (await http.get("/openapi.json")).json()
    operations = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        if path.startswith("/api/")
        for method in item
        if re.fullmatch(r"get|put|post|patch|delete", method)
    }
    rows = {(row.method, row.path) for row in ROWS}
    assert operations == rows, (
        f"missing rows: {sorted(operations - rows)}; stale rows: {sorted(rows - operations)}"
    )
