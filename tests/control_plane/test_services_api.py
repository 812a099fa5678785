"""The services API without a running engine (the app in-process, real Redis): 503 when Docker is off, the
spec rules (422), `service://NAME` references from proxies and routes (who may name which service, and a
service in use is not deleted), the shared name space of managed and external services, and what a
token's deletion takes with it. Everything that needs containers is in tests/docker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from control_plane.app import create_app
from control_plane.runtime import default_cascade
from shared import keys
from shared.config import Settings
from shared.encryption import new_key_b64

from .conftest import ADMIN, bearer, create_token

SERVICES = "/api/v1/services/"
EXTERNAL = "/api/v1/services/external/"
PROXIES = "/api/v1/proxy/targets/"
PUBLIC = "http://93.184.216.34"
BUILT_IN_AUTH_HOST = "auth.test.localhost"  # AUTH_HOST under the test BASE_DOMAIN, there when a KEK is set


@pytest.fixture
async def services_api(
    settings: Settings, redis_client: aioredis.Redis, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with DOCKER_URL naming a socket nobody listens on: desired state is written, nothing runs."""
    configured = settings.model_copy(
        update={
            "DOCKER_URL": f"unix://{tmp_path}/no-engine.sock",
            "DOCKER_IMAGE_ALLOWLIST": "docker.io/mhp-test/",
            "KEY_ENCRYPTION_KEY_B64": new_key_b64(),
            "ALLOWED_TARGET_CIDRS": "",
            "ACME_WORKER_ENABLED": False,  # it would start (a KEK is set) and only slow the teardown down
        }
    )
    app = create_app(configured)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://control-plane.test") as client:
            yield client


def service(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "image": "mhp-test/busybox:1", "network_mode": "none", "pull": "never", **fields}


async def test_without_docker_the_services_api_answers_503_and_external_services_work(
    api: httpx.AsyncClient,
) -> None:
    for method, path, body in (
        ("POST", SERVICES, service("web")),
        ("GET", SERVICES, None),
        ("GET", SERVICES + "web", None),
        ("GET", SERVICES + "web/logs", None),
        ("POST", SERVICES + "web/start", None),
    ):
        response = await api.request(method, path, json=body, headers=ADMIN)
        assert response.status_code == 503, (method, path, response.text)
        assert "DOCKER_URL" in response.json()["detail"]
    created = await api.post(EXTERNAL, json={"name": "api", "url": PUBLIC}, headers=ADMIN)
    assert created.status_code == 201, created.text
    assert (await api.get("/health")).status_code == 200


async def test_an_unanswering_engine_keeps_the_desired_state(services_api: httpx.AsyncClient) -> None:
    created = await services_api.post(SERVICES, json=service("web"), headers=ADMIN)
    assert created.status_code == 201, created.text
    assert created.json()["status"]["state"] == "pending"
    assert (await services_api.get(SERVICES + "web/logs", headers=ADMIN)).text == ""
    stats = (await services_api.get(SERVICES + "web/stats", headers=ADMIN)).json()
    assert stats["state"] == "pending" and stats["memory_limit_bytes"] == 512 * 1024 * 1024
    assert (await services_api.post(SERVICES + "web/stop", headers=ADMIN)).json()[
        "desired_state"
    ] == "stopped"
    assert (await services_api.get("/health")).status_code == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (service("Bad_Name"), "name"),
        (service("external"), "reserved"),
        (service("both", build={"context": "x"}), "exactly one of image and build"),
        (service("none-ports", ports=[{"name": "http"}]), "network_mode none has no ports"),
        (
            service(
                "host-ports",
                network_mode="host",
                ports=[{"name": "http", "container_port": 80, "host_port": 81}],
            ),
            "container_port must equal host_port",
        ),
        (
            service("bridge-ports", network_mode="backend", ports=[{"name": "http"}]),
            "container_port is required",
        ),
        (service("labels", labels={"mhp.service": "other"}), "mhp."),
        (service("memory", memory_limit="lots"), "memory_limit"),
        (service("restart", restart_policy="sometimes"), "restart_policy"),
        (service("health", healthcheck={"test": ["RUN", "x"]}), "healthcheck"),
        (service("dupes", network_mode="host", ports=[{"name": "a"}, {"name": "a"}]), "unique"),
        (service("secret", environment={"K": {"secret": True}}), "needs its value"),
        (service("proxy", auto_proxy={"target_url": "http://x"}), "auto proxy always targets"),
    ],
)
async def test_specs_that_are_refused(
    services_api: httpx.AsyncClient, body: dict[str, Any], message: str
) -> None:
    response = await services_api.post(SERVICES, json=body, headers=ADMIN)
    assert response.status_code == 422 and message in response.text, response.text
    assert (await services_api.get(SERVICES, headers=ADMIN)).json() == []


async def test_service_references_from_proxies_and_routes(services_api: httpx.AsyncClient) -> None:
    alice = bearer(await create_token(services_api, "alice"))
    bob = bearer(await create_token(services_api, "bob"))
    assert (await services_api.post(SERVICES, json=service("mine"), headers=alice)).status_code == 201
    external = {"name": "alice-api", "url": PUBLIC}
    assert (await services_api.post(EXTERNAL, json=external, headers=alice)).status_code == 201

    def proxy(host: str, target: str) -> dict[str, Any]:
        return {"hostname": host, "target_url": target, "enable_https": False}

    unknown = await services_api.post(
        PROXIES, json=proxy("a.example.net", "service://nothing"), headers=alice
    )
    assert unknown.status_code == 422 and "no service named 'nothing'" in unknown.text
    for target in ("service://mine", "service://alice-api/v2"):
        theirs = await services_api.post(PROXIES, json=proxy("b.example.net", target), headers=bob)
        assert theirs.status_code == 403, theirs.text
    own = await services_api.post(PROXIES, json=proxy("c.example.net", "service://mine"), headers=alice)
    assert own.status_code == 201, own.text
    route = {
        "id": "to-api",
        "path_pattern": "/api",
        "target_url": "service://alice-api/v1",
        "scope": "proxies",
        "proxy_hostnames": ["c.example.net"],
    }
    assert (await services_api.post("/api/v1/routes/", json=route, headers=alice)).status_code == 201
    stolen_route = {**route, "id": "steal", "proxy_hostnames": ["c.example.net"]}
    assert (await services_api.post("/api/v1/routes/", json=stolen_route, headers=bob)).status_code == 403
    # The admin may target anyone's service.
    admin_proxy = await services_api.post(
        PROXIES, json=proxy("d.example.net", "service://mine"), headers=ADMIN
    )
    assert admin_proxy.status_code == 201

    # Services in use are not deleted; the refusal names the users.
    in_use = await services_api.delete(SERVICES + "mine", headers=alice)
    assert in_use.status_code == 409
    assert "proxy c.example.net" in in_use.text and "proxy d.example.net" in in_use.text
    in_use = await services_api.delete(EXTERNAL + "alice-api", headers=alice)
    assert in_use.status_code == 409 and "route to-api" in in_use.text


async def test_managed_and_external_services_share_names(services_api: httpx.AsyncClient) -> None:
    assert (await services_api.post(SERVICES, json=service("shared"), headers=ADMIN)).status_code == 201
    clash = await services_api.post(EXTERNAL, json={"name": "shared", "url": PUBLIC}, headers=ADMIN)
    assert clash.status_code == 409
    assert (
        await services_api.post(EXTERNAL, json={"name": "ext", "url": PUBLIC}, headers=ADMIN)
    ).status_code == 201
    assert (await services_api.post(SERVICES, json=service("ext"), headers=ADMIN)).status_code == 409
    # The external API never shows or changes a managed service.
    assert (await services_api.get(EXTERNAL + "shared", headers=ADMIN)).status_code == 404
    assert [e["name"] for e in (await services_api.get(EXTERNAL, headers=ADMIN)).json()] == ["ext"]


async def test_an_ordinary_tokens_external_url_is_checked_like_any_target(
    services_api: httpx.AsyncClient,
) -> None:
    tenant = bearer(await create_token(services_api, "tenant"))
    for url in ("http://127.0.0.1:8080", "http://10.1.2.3", "http://localhost:9000"):
        refused = await services_api.post(EXTERNAL, json={"name": "x", "url": url}, headers=tenant)
        assert refused.status_code == 422, (url, refused.text)
    chained = await services_api.post(EXTERNAL, json={"name": "x", "url": "service://y"}, headers=ADMIN)
    assert chained.status_code == 422
    assert (
        await services_api.post(EXTERNAL, json={"name": "x", "url": PUBLIC}, headers=tenant)
    ).status_code == 201
    moved = await services_api.put(EXTERNAL + "x", json={"url": "http://192.168.1.1"}, headers=tenant)
    assert moved.status_code == 422


async def test_auto_proxies_go_with_their_service(
    services_api: httpx.AsyncClient, redis_client: aioredis.Redis
) -> None:
    body = service(
        "mcp",
        auto_proxy={
            "enable_https": False,
            "auth": {"allowed_users": ["alice"]},
            "resource": {"path": "/mcp"},
        },
    )
    created = await services_api.post(SERVICES, json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    host = "mcp.test.localhost"
    assert created.json()["auto_proxy"] == host
    assert (await services_api.get(PROXIES + host, headers=ADMIN)).json()["target_url"] == "service://mcp"
    auth = (await services_api.get(PROXIES + host + "/auth", headers=ADMIN)).json()
    assert auth["allowed_users"] == ["alice"]
    # A name someone already serves refuses the whole create: no service, no ports, no half of anything.
    taken = await services_api.post(
        SERVICES, json=service("other", auto_proxy={"hostname": host}), headers=ADMIN
    )
    assert taken.status_code == 409
    assert (await services_api.get(SERVICES + "other", headers=ADMIN)).status_code == 404
    assert (await services_api.delete(SERVICES + "mcp", headers=ADMIN)).status_code == 204
    # (The admin's built-in auth-host proxy may appear at any moment: it is created in the background.)
    for key in (keys.proxies(), keys.proxy_auth(), keys.proxy_resources(), keys.services(), keys.ports()):
        assert set(await redis_client.hkeys(key)) - {BUILT_IN_AUTH_HOST} == set(), key


async def test_a_tokens_deletion_takes_its_services(
    services_api: httpx.AsyncClient, redis_client: aioredis.Redis
) -> None:
    assert {"service", "external-service", "port"} <= set(default_cascade().kinds)
    tenant = bearer(await create_token(services_api, "tenant"))
    other = bearer(await create_token(services_api, "other"))
    for who, name in ((tenant, "t1"), (tenant, "t2"), (other, "o1")):
        body = service(name, auto_proxy={"enable_https": False})
        assert (await services_api.post(SERVICES, json=body, headers=who)).status_code == 201
    assert (
        await services_api.post(EXTERNAL, json={"name": "t-api", "url": PUBLIC}, headers=tenant)
    ).status_code == 201
    assert (await services_api.post("/api/v1/ports/", json={}, headers=tenant)).status_code == 201

    assert (await services_api.delete("/api/v1/tokens/tenant", headers=ADMIN)).status_code == 204
    assert [s["name"] for s in (await services_api.get(SERVICES, headers=ADMIN)).json()] == ["o1"]
    assert set(await redis_client.hkeys(keys.service_endpoints())) == set()
    proxies = (await services_api.get(PROXIES, headers=ADMIN)).json()
    # the admin's built-in auth-host proxy (there because a KEK is set) stays; the tenants' are what changed
    assert [p["hostname"] for p in proxies if p["owner"] != "admin"] == ["o1.test.localhost"]
    assert (await services_api.get("/api/v1/ports/", headers=ADMIN)).json() == []
