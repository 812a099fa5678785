"""`mhp workflow list|retry|drop` as a real subprocess against `python -m control_plane` (whose workers do
not run here: no key-encryption key for ACME, no DOCKER_URL for services), so queued events stay put."""

from __future__ import annotations

import json

import httpx
import pytest
import redis

from control_plane.records import CertificateWanted
from shared import keys
from tests.harness.services import RedisServer

from .conftest import ADMIN, RunningControlPlane
from .test_cli import cp, fails, ok, run  # noqa: F401  (cp: the fixture)

pytestmark = pytest.mark.slow

SERVICE_STREAM = keys.service_workflow_stream()
ACME_STREAM = keys.acme_workflow_stream()
ACME_DEAD = keys.workflow_dead_letters(ACME_STREAM)


@pytest.fixture
def client(redis_server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(redis_server.url, password=redis_server.password, decode_responses=True)


def test_list_retry_and_drop_from_the_cli(cp: RunningControlPlane, client: redis.Redis) -> None:  # noqa: F811
    first = client.xadd(SERVICE_STREAM, {"schema_version": "1", "name": "notes", "reason": "test", "at": "1"})
    second = client.xadd(SERVICE_STREAM, {"schema_version": "1", "name": "wiki", "reason": "test", "at": "1"})
    event = CertificateWanted(reason="renew", cert_name="shop").to_stream_fields()
    letter = client.xadd(
        ACME_DEAD,
        {
            "original_id": "1-0",
            "event": json.dumps(event),
            "error": "ConnectionError: CA away",
            "attempts": "5",
        },
    )

    table = ok(run(cp, "workflow", "list"))
    lines = table.splitlines()
    assert lines[0].split()[:5] == ["WORKFLOW", "PENDING", "IN", "FLIGHT", "FAILED"]
    assert any(line.split()[:3] == ["services", "2", "0"] for line in lines)
    assert any(first in line and "pending" in line and "name=notes" in line for line in lines)
    dead_row = next(line for line in lines if f"dead:{letter}" in line)
    assert "dead" in dead_row.split() and "cert_name=shop" in dead_row and "CA away" in dead_row

    views = json.loads(ok(run(cp, "workflow", "list", "--json", "--workflow", "services")))
    assert [view["workflow"] for view in views] == ["services"]
    assert [item["item"] for item in views[0]["pending"]] == [first, second]

    dropped = ok(run(cp, "workflow", "drop", "services", first))
    assert first in dropped and "dropped" in dropped
    assert [entry_id for entry_id, _ in client.xrange(SERVICE_STREAM)] == [second]

    retried = json.loads(ok(run(cp, "workflow", "retry", "acme", f"dead:{letter}", "--json")))
    assert retried["action"] == "retried"
    assert client.xlen(ACME_DEAD) == 0
    assert client.xrange(ACME_STREAM)[-1] == (retried["new_item"], event)

    # Already queued: retrying would only queue it twice; unknown and malformed items are refused.
    assert "not been delivered" in fails(run(cp, "workflow", "retry", "services", second))
    assert "no item" in fails(run(cp, "workflow", "drop", "services", first))
    assert "not a workflow item" in fails(run(cp, "workflow", "drop", "services", "nonsense"))


def test_an_ordinary_token_is_refused(cp: RunningControlPlane, client: redis.Redis) -> None:  # noqa: F811
    made = httpx.post(f"{cp.url}/api/v1/tokens/", json={"name": "tenant"}, headers=ADMIN, timeout=10)
    token = made.json()["token"]
    entry = client.xadd(SERVICE_STREAM, {"schema_version": "1", "name": "notes", "reason": "test", "at": "1"})
    assert "only the admin" in fails(run(cp, "workflow", "list", token=token))
    assert "only the admin" in fails(run(cp, "workflow", "drop", "services", entry, token=token))
    assert client.xlen(SERVICE_STREAM) == 1
