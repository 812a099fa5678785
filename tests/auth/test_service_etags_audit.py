"""Docker-managed services through the API of a control plane whose engine is unreachable (as in the
authorization matrix: records are written, containers never start): a stale If-Match is refused for
PUT/PATCH/DELETE and start/stop, the new ETag comes back, and a secret environment value never reaches
the change audit."""

from __future__ import annotations

import json

import httpx
import pytest
import redis.asyncio as aioredis

from shared import keys
from tests.control_plane.conftest import ADMIN, RunningControlPlane

pytestmark = pytest.mark.auth

SERVICES = "/api/v1/services/"
IMAGE = "mhp-test/busybox:matrix"
SECRET = "env-secret-value-8c8c"


async def test_service_writes_honour_if_match_and_hide_secret_values(
    http: httpx.AsyncClient, cp: RunningControlPlane, redis_client: aioredis.Redis
) -> None:
    body = {
        "name": "etag-svc",
        "image": IMAGE,
        "network_mode": "none",
        "pull": "never",
        "environment": {"LOG_LEVEL": "info", "DB_URL": {"secret": True, "value": SECRET}},
    }
    created = await http.post(SERVICES, json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    url = SERVICES + "etag-svc"
    first = await http.get(url, headers=ADMIN)
    etag = first.headers["etag"]
    assert created.headers["etag"] == etag

    moved = await http.patch(url, json={"memory_limit": "64m"}, headers=ADMIN)
    assert moved.status_code == 200, moved.text
    assert moved.headers["etag"] != etag
    stale = await http.patch(url, json={"memory_limit": "96m"}, headers={**ADMIN, "If-Match": etag})
    assert stale.status_code == 412, stale.text
    assert (await http.get(url, headers=ADMIN)).json()["memory_limit"] == "64m"
    put_body = {k: v for k, v in body.items() if k != "name"}
    put_body["environment"] = {"LOG_LEVEL": "debug", "DB_URL": {"secret": True, "value": SECRET + "-2"}}
    stale_put = await http.put(url, json=put_body, headers={**ADMIN, "If-Match": etag})
    assert stale_put.status_code == 412
    fresh_put = await http.put(url, json=put_body, headers={**ADMIN, "If-Match": moved.headers["etag"]})
    assert fresh_put.status_code == 200, fresh_put.text
    stopped = await http.post(url + "/stop", headers=ADMIN)
    assert stopped.status_code == 202
    assert (
        await http.delete(url, headers={**ADMIN, "If-Match": fresh_put.headers["etag"]})
    ).status_code == 412
    current = (await http.get(url, headers=ADMIN)).headers["etag"]
    assert (await http.delete(url, headers={**ADMIN, "If-Match": current})).status_code == 204

    audit = (await http.get("/api/v1/logs/audit/", params={"kind": "service"}, headers=ADMIN)).json()["items"]
    assert [e["action"] for e in audit] == ["deleted", "updated", "updated", "updated", "created"]
    put_entry = audit[2]
    assert put_entry["diff"]["spec.environment.LOG_LEVEL.value"] == {"old": "info", "new": "debug"}
    assert put_entry["diff"]["spec.environment.DB_URL.value"] == {"old": "***", "new": "***"}
    stored = json.dumps(await redis_client.xrange(keys.audit_changes_stream()))
    assert SECRET not in stored
