"""`/api/v1/workflows/` against a real Redis and the control plane's real certificate worker (in-process app
with its lifespan): a stuck event of a crashed replica, an event whose handler fails, a dead letter, a
certificate whose issuance failed, and the service workflow's queue; each shown, retried and dropped.

The certificate worker consumes the `acme` workflow as in production. A "crashed replica" is a consumer that
read an event (XREADGROUP, as any replica does) and never acknowledged it; a failing handler is produced by
making the certificates hash unreadable (a string under its key: WRONGTYPE), which is what a broken Redis
would do to the real issuer. Waits poll the API under a deadline that only stops a hung test.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from control_plane.app import create_app
from control_plane.docker.workflow import request_converge
from control_plane.records import CertificateWanted
from shared import keys
from shared.config import Settings, load_settings
from tests.conftest import NO_RATE_LIMITS
from tests.control_plane.conftest import ADMIN, ADMIN_TOKEN, bearer
from tests.harness.services import RedisServer, free_port, start_redis

WORKFLOWS = "/api/v1/workflows/"
ACME_STREAM = keys.acme_workflow_stream()
ACME_GROUP = keys.acme_workflow_group()


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis of these tests' own: a control plane that another test module keeps running would otherwise
    be one more consumer of these workflow events."""
    server = start_redis(tmp_path_factory.mktemp("redis-workflows"))
    try:
        yield server
    finally:
        server.service.stop()


def workflow_settings(server: RedisServer, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "REDIS_URL": server.url,
        "REDIS_PASSWORD": server.password,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "BASE_DOMAIN": "test.localhost",
        "LOG_LEVEL": "DEBUG",
        "KEY_ENCRYPTION_KEY_B64": base64.b64encode(bytes(range(32))).decode(),
        # Nothing listens there: an issuance fails at its first request, and is recorded as failed.
        "ACME_DIRECTORY_URL": f"http://127.0.0.1:{free_port()}/dir",
        "ACME_STAGING_URL": f"http://127.0.0.1:{free_port()}/dir",
        "ACME_RETRY_BASE_SECONDS": 3600.0,
        # Takeover of a stuck event waits an order plus two leases (here 72 s): longer than any test.
        "ACME_ORDER_TIMEOUT_SECONDS": 60.0,
        "ACME_LOCK_LEASE_SECONDS": 6.0,
        **NO_RATE_LIMITS,
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
async def redis_client(own_redis: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(own_redis.url, password=own_redis.password, decode_responses=True)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


AppFactory = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def control_plane(own_redis: RedisServer, redis_client: aioredis.Redis) -> AsyncIterator[AppFactory]:
    """Start the control plane in-process (real lifespan: the certificate worker runs) with settings."""
    stack: list[Any] = []

    async def start(**overrides: object) -> httpx.AsyncClient:
        app = create_app(workflow_settings(own_redis, **overrides))
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        stack.append(lifespan)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://control-plane.test"
        )
        stack.append(client)
        return client

    try:
        yield start
    finally:
        for entry in reversed(stack):
            if isinstance(entry, httpx.AsyncClient):
                await entry.aclose()
            else:
                await entry.__aexit__(None, None, None)


async def views(api: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await api.get(WORKFLOWS, headers=ADMIN)
    assert response.status_code == 200, response.text
    return {view["workflow"]: view for view in response.json()}


async def wait_for(
    api: httpx.AsyncClient, what: str, predicate: Callable[[dict[str, dict[str, Any]]], object]
) -> dict[str, dict[str, Any]]:
    async with asyncio.timeout(60):  # a hang guard only
        while True:
            current = await views(api)
            if predicate(current):
                return current
            await asyncio.sleep(0.1)
    raise AssertionError(what)  # unreachable: the timeout raises


def items(view: dict[str, Any], state: str) -> dict[str, dict[str, Any]]:
    return {item["item"]: item for item in view[state]}


async def test_a_stuck_event_of_a_crashed_replica_is_shown_retried_and_dropped(
    control_plane: AppFactory, redis_client: aioredis.Redis
) -> None:
    # Before the control plane starts, a replica read two events and died without acknowledging them.
    await redis_client.xgroup_create(ACME_STREAM, ACME_GROUP, id="0", mkstream=True)
    wanted = [CertificateWanted(reason="renew", cert_name=name) for name in ("gone-1", "gone-2")]
    first, second = [await redis_client.xadd(ACME_STREAM, w.to_stream_fields()) for w in wanted]
    await redis_client.xreadgroup(ACME_GROUP, "crashed-replica", {ACME_STREAM: ">"}, count=2)
    api = await control_plane()
    # The live worker only takes them over after 72 s idle; a third event shows it is consuming.
    third = await redis_client.xadd(
        ACME_STREAM, CertificateWanted(reason="renew", cert_name="x").to_stream_fields()
    )
    await wait_for(api, "the live worker consumed", lambda v: len(v["acme"]["consumers"]) == 2)
    live = next(c["name"] for c in (await views(api))["acme"]["consumers"] if c["name"] != "crashed-replica")
    assert third not in items((await views(api))["acme"], "in_flight")

    view = (await views(api))["acme"]
    stuck = items(view, "in_flight")
    assert set(stuck) == {first, second}
    assert stuck[first]["consumer"] == "crashed-replica"
    assert stuck[first]["deliveries"] == 1
    assert stuck[first]["event"]["cert_name"] == "gone-1"
    assert stuck[first]["delivered_at"] is not None and stuck[first]["enqueued_at"] is not None
    assert view["counts"]["in_flight"] == 2
    assert {c["name"] for c in view["consumers"]} == {live, "crashed-replica"}

    retried = await api.post(f"{WORKFLOWS}acme/{first}/retry", headers=ADMIN)
    assert retried.status_code == 200, retried.text
    new_id = retried.json()["new_item"]
    assert retried.json()["action"] == "retried" and new_id > first
    # The live worker handles the new event (the certificate is gone: nothing to do) and acknowledges it.
    after = await wait_for(
        api,
        "the retried event handled",
        lambda v: new_id not in items(v["acme"], "in_flight") and not v["acme"]["pending"],
    )
    assert set(items(after["acme"], "in_flight")) == {second}
    assert await redis_client.xrange(ACME_STREAM, min=first, max=first) == []

    dropped = await api.delete(f"{WORKFLOWS}acme/{second}", headers=ADMIN)
    assert dropped.status_code == 200 and dropped.json()["action"] == "dropped"
    assert items((await views(api))["acme"], "in_flight") == {}
    assert (await redis_client.xpending(ACME_STREAM, ACME_GROUP))["pending"] == 0
    assert (await api.delete(f"{WORKFLOWS}acme/{second}", headers=ADMIN)).status_code == 404


async def test_a_failing_handler_is_recorded_then_dead_lettered_and_both_can_be_retried_and_dropped(
    control_plane: AppFactory, redis_client: aioredis.Redis
) -> None:
    api = await control_plane()
    # Redis answers WRONGTYPE to every read of the certificates: the issuer's handler raises.
    await redis_client.set(keys.certificates(), "not a hash")
    event = await redis_client.xadd(
        ACME_STREAM, CertificateWanted(reason="renew", cert_name="c1").to_stream_fields()
    )
    view = (await wait_for(api, "the failure recorded", lambda v: event in items(v["acme"], "failed")))[
        "acme"
    ]
    failed = items(view, "failed")[event]
    assert failed["state"] == "failed" and failed["kind"] == "event"
    assert failed["attempts"] == 1 and failed["deliveries"] == 1
    assert "WRONGTYPE" in failed["error"]
    assert failed["consumer"] == view["consumers"][0]["name"]
    assert event not in items(view, "in_flight")

    # Retried while still broken: a new event, failing the same way; the old one is gone.
    retried = (await api.post(f"{WORKFLOWS}acme/{event}/retry", headers=ADMIN)).json()
    again = retried["new_item"]
    view = (await wait_for(api, "the retry failed too", lambda v: again in items(v["acme"], "failed")))[
        "acme"
    ]
    assert event not in items(view, "failed")
    # Dropped: acknowledged and deleted, the failure record with it.
    assert (await api.delete(f"{WORKFLOWS}acme/{again}", headers=ADMIN)).status_code == 200
    view = (await views(api))["acme"]
    assert view["failed"] == [] and view["in_flight"] == []
    assert await redis_client.hlen(keys.workflow_failures(ACME_STREAM)) == 0
    await redis_client.delete(keys.certificates())


async def test_after_the_last_delivery_an_event_is_dead_lettered_with_its_error(
    control_plane: AppFactory, redis_client: aioredis.Redis
) -> None:
    api = await control_plane(WORKFLOW_MAX_DELIVERIES=1)
    await redis_client.set(keys.certificates(), "not a hash")
    event = await redis_client.xadd(
        ACME_STREAM, CertificateWanted(reason="renew", cert_name="c1").to_stream_fields()
    )
    malformed = await redis_client.xadd(ACME_STREAM, {"reason": "nonsense"})
    # The view reads the lists one after another: wait for one that saw the moves completed.
    view = (
        await wait_for(
            api,
            "two dead letters",
            lambda v: len(v["acme"]["dead"]) == 2 and not v["acme"]["in_flight"] and not v["acme"]["failed"],
        )
    )["acme"]
    dead = {item["original_id"]: item for item in view["dead"]}
    assert dead[event]["attempts"] == 1 and "WRONGTYPE" in dead[event]["error"]
    assert dead[event]["event"]["cert_name"] == "c1"
    assert dead[malformed]["error"].startswith("malformed event")
    assert view["counts"]["dead"] == 2 and view["in_flight"] == [] and view["failed"] == []
    # Moved, not copied: the workflow stream no longer holds them.
    assert await redis_client.xrange(ACME_STREAM, min=event, max=event) == []

    # Repaired, then retried: the event is handled (the certificate is gone) and leaves no trace.
    await redis_client.delete(keys.certificates())
    letter = dead[event]["item"]
    retried = await api.post(f"{WORKFLOWS}acme/{letter}/retry", headers=ADMIN)
    assert retried.status_code == 200, retried.text
    view = (
        await wait_for(
            api,
            "the retried dead letter handled",
            lambda v: not v["acme"]["pending"] and not v["acme"]["in_flight"] and len(v["acme"]["dead"]) == 1,
        )
    )["acme"]
    assert [item["original_id"] for item in view["dead"]] == [malformed]
    assert (await api.delete(f"{WORKFLOWS}acme/{dead[malformed]['item']}", headers=ADMIN)).status_code == 200
    assert (await views(api))["acme"]["dead"] == []
    assert (await api.post(f"{WORKFLOWS}acme/{letter}/retry", headers=ADMIN)).status_code == 404


async def test_a_failed_issuance_is_shown_and_retried_as_a_renewal(
    control_plane: AppFactory, redis_client: aioredis.Redis
) -> None:
    api = await control_plane()
    created = await api.post(
        "/api/v1/certificates/",
        json={"cert_name": "broken", "domains": ["broken.test.localhost"]},
        headers=ADMIN,
    )
    assert created.status_code == 201, created.text
    view = (
        await wait_for(
            api, "the issuance failed", lambda v: "certificate:broken" in items(v["acme"], "failed")
        )
    )["acme"]
    failed = items(view, "failed")["certificate:broken"]
    assert failed["kind"] == "certificate" and failed["attempts"] == 1 and failed["error"]
    assert failed["next_retry_at"] > failed["failed_at"]  # backing off (an hour here)

    retried = await api.post(f"{WORKFLOWS}acme/certificate:broken/retry", headers=ADMIN)
    assert retried.status_code == 200, retried.text
    # The backoff was reset and a new attempt ran at once (and failed again, at a later time).
    view = (
        await wait_for(
            api,
            "the new attempt",
            lambda v: (
                (i := items(v["acme"], "failed").get("certificate:broken"))
                and i["failed_at"] > failed["failed_at"]
                and i["attempts"] == 1  # the renewal's own write first resets attempts to 0
            ),
        )
    )["acme"]
    assert items(view, "failed")["certificate:broken"]["error"]
    # A certificate's failure is its own state, not a queued event: delete the certificate instead.
    refused = await api.delete(f"{WORKFLOWS}acme/certificate:broken", headers=ADMIN)
    assert refused.status_code == 409 and "delete the certificate" in refused.json()["detail"]


async def test_the_service_workflow_queue_without_a_controller(
    control_plane: AppFactory, redis_client: aioredis.Redis
) -> None:
    # No DOCKER_URL: nothing consumes the service workflow, so its events wait as pending.
    api = await control_plane(ACME_WORKER_ENABLED=False)
    first = await request_converge(redis_client, "notes", "test")
    second = await request_converge(redis_client, "notes", "test again")
    view = (await views(api))["services"]
    assert [i["item"] for i in view["pending"]] == [first, second]
    assert view["pending"][0]["event"]["name"] == "notes"
    assert view["counts"]["pending"] == 2 and view["consumers"] == []

    # Not delivered yet: retrying would only queue it twice.
    conflict = await api.post(f"{WORKFLOWS}services/{first}/retry", headers=ADMIN)
    assert conflict.status_code == 409
    assert (await api.delete(f"{WORKFLOWS}services/{first}", headers=ADMIN)).status_code == 200
    view = (await views(api))["services"]
    assert [i["item"] for i in view["pending"]] == [second]
    assert view["counts"]["pending"] == 1


async def test_workflows_are_admin_only_and_bad_input_is_4xx(
    control_plane: AppFactory, redis_client: aioredis.Redis
) -> None:
    api = await control_plane(ACME_WORKER_ENABLED=False)
    made = await api.post("/api/v1/tokens/", json={"name": "tenant"}, headers=ADMIN)
    tenant = bearer(made.json()["token"])
    entry = await request_converge(redis_client, "notes", "test")
    assert (await api.get(WORKFLOWS, headers=tenant)).status_code == 403
    assert (await api.post(f"{WORKFLOWS}services/{entry}/retry", headers=tenant)).status_code == 403
    assert (await api.delete(f"{WORKFLOWS}services/{entry}", headers=tenant)).status_code == 403
    assert (await api.get(WORKFLOWS)).status_code == 401
    assert await redis_client.xlen(keys.service_workflow_stream()) == 1  # nothing was dropped

    assert (await api.delete(f"{WORKFLOWS}nope/{entry}", headers=ADMIN)).status_code == 404
    for bad in ("123", "x-1", "dead:abc", "other:thing", "1-2-3"):
        response = await api.delete(f"{WORKFLOWS}services/{bad}", headers=ADMIN)
        assert response.status_code == 422, (bad, response.text)
    assert (await api.delete(f"{WORKFLOWS}services/99999999999999999999-0", headers=ADMIN)).status_code == 404
    assert (await api.post(f"{WORKFLOWS}services/dead:1-0/retry", headers=ADMIN)).status_code == 404
    assert (await api.post(f"{WORKFLOWS}services/certificate:x/retry", headers=ADMIN)).status_code == 404
    assert (await api.get(WORKFLOWS, params={"limit": 0}, headers=ADMIN)).status_code == 422
    # Nothing a refused or invalid call did changed the queue.
    assert [i["item"] for i in (await views(api))["services"]["pending"]] == [entry]
