"""The control plane's Prometheus /metrics on its own loopback listener, read the way Prometheus reads it
(over TCP, parsed with prometheus_client's text parser), after real API traffic, real token requests, a real
ACME order failing against an unreachable CA, and real workflow events in Redis. Then the Grafana dashboards
under deploy/grafana/: every metric they query is one a real scrape of its plane exports, and the
Prometheus config under deploy/prometheus/ scrapes the ports the settings default to.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis
import yaml

from control_plane.app import create_app
from control_plane.docker.workflow import request_converge
from shared import keys
from shared.config import Settings, load_settings
from tests.conftest import NO_RATE_LIMITS, REPO_ROOT
from tests.control_plane.conftest import ADMIN, ADMIN_TOKEN
from tests.data_plane.conftest import start_data_plane
from tests.harness.prometheus import SampleKey, samples
from tests.harness.services import RedisServer, free_port, start_redis

DASHBOARDS = sorted((REPO_ROOT / "deploy" / "grafana").glob("*.json"))
PROMETHEUS_CONFIG = REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml"
# Names in PromQL that are functions or keywords, not metrics.
_PROMQL_WORDS = {"by", "without", "le", "on", "ignoring", "group_left", "group_right", "bool", "offset"}


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis of this module's own: workflow events here must not meet another control plane's workers."""
    server = start_redis(tmp_path_factory.mktemp("redis-metrics"))
    try:
        yield server
    finally:
        server.service.stop()


def metrics_settings(server: RedisServer, metrics_port: int) -> Settings:
    return load_settings(
        REDIS_URL=server.url,
        REDIS_PASSWORD=server.password,
        ADMIN_TOKEN=ADMIN_TOKEN,
        BASE_DOMAIN="test.localhost",
        KEY_ENCRYPTION_KEY_B64=base64.b64encode(bytes(range(32))).decode(),
        ACME_DIRECTORY_URL=f"http://127.0.0.1:{free_port()}/dir",  # nothing listens: the order fails
        ACME_RETRY_BASE_SECONDS=3600.0,
        CP_METRICS_PORT=metrics_port,
        INTERNAL_HOST="127.0.0.1",
        **NO_RATE_LIMITS,
    )


@pytest.fixture
async def control_plane(own_redis: RedisServer) -> AsyncIterator[tuple[httpx.AsyncClient, int]]:
    client = aioredis.Redis.from_url(own_redis.url, password=own_redis.password, decode_responses=True)
    await client.flushall()
    await client.aclose()
    port = free_port()
    app = create_app(metrics_settings(own_redis, port))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://control-plane.test") as api:
            yield api, port


def fetch(port: int, path: str = "/metrics", method: str = "GET") -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def scrape(port: int) -> dict[SampleKey, float]:
    status, body = await asyncio.to_thread(fetch, port)
    assert status == 200, body
    return samples(body)


def value(scraped: dict[SampleKey, float], name: str, **labels: str) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_api_oauth_acme_and_workflow_metrics_from_a_real_scrape(
    control_plane: tuple[httpx.AsyncClient, int], own_redis: RedisServer
) -> None:
    api, port = control_plane
    # Management API traffic: counted by route template, never by the names in the path.
    assert (await api.get("/api/v1/tokens/", headers=ADMIN)).status_code == 200
    assert (await api.get("/api/v1/tokens/secret-tenant-name", headers=ADMIN)).status_code == 404
    assert (await api.get("/api/v1/tokens/")).status_code == 401
    assert (await api.get("/no/such/page")).status_code == 404
    assert (await api.request("BREW", "/api/v1/tokens/", headers=ADMIN)).status_code == 405

    # Token requests: a machine client gets a token; an unknown client and a wrong grant are refused.
    created = await api.post(
        "/api/v1/oauth/clients/",
        json={
            "client_name": "Nightly job",
            "redirect_uris": ["http://127.0.0.1/unused"],
            "allow_client_credentials": True,
        },
        headers=ADMIN,
    )
    assert created.status_code == 201, created.text
    machine = (created.json()["client_id"], created.json()["client_secret"])
    refused = await api.post("/token", data={"grant_type": "client_credentials"}, auth=("nobody", "x"))
    assert refused.status_code == 401
    wrong = await api.post("/token", data={"grant_type": "authorization_code", "code": "x"}, auth=machine)
    assert wrong.status_code == 400
    wrong_error = wrong.json()["error"]
    no_resource = await api.post("/token", data={"grant_type": "client_credentials"}, auth=machine)
    assert no_resource.status_code == 400, no_resource.text
    proxy = {"hostname": "mcp.test.localhost", "target_url": "http://127.0.0.1:9"}
    assert (await api.post("/api/v1/proxy/targets/", json=proxy, headers=ADMIN)).status_code == 201
    protection = {"allowed_users": [], "allowed_clients": [machine[0]]}
    protected = await api.put("/api/v1/proxy/targets/mcp.test.localhost/auth", json=protection, headers=ADMIN)
    assert protected.status_code == 200, protected.text
    resource = {"grant_type": "client_credentials", "resource": "https://mcp.test.localhost/mcp"}
    issued = await api.post("/token", data=resource, auth=machine)
    assert issued.status_code == 200, issued.text

    # An ACME order against a CA that is not there fails (and is retried later, with backoff).
    made = await api.post(
        "/api/v1/certificates/", json={"cert_name": "metrics", "domains": ["m.test.localhost"]}, headers=ADMIN
    )
    assert made.status_code == 201, made.text
    # Service-workflow events nobody consumes here (no DOCKER_URL): the lag.
    redis_client = aioredis.Redis.from_url(own_redis.url, password=own_redis.password, decode_responses=True)
    try:
        for name in ("a", "b", "c"):
            await request_converge(redis_client, name, "metrics test")
        await redis_client.xadd(
            keys.workflow_dead_letters(keys.acme_workflow_stream()),
            {"original_id": "1-0", "event": "{}", "error": "x", "attempts": "5"},
        )
    finally:
        await redis_client.aclose()

    async with asyncio.timeout(60):  # a hang guard: the failed order is counted once the issuer is done
        while True:
            scraped = await scrape(port)
            if value(scraped, "mhp_cp_acme_orders_total", outcome="failed") >= 1:
                break
            await asyncio.sleep(0.1)
    assert value(scraped, "mhp_cp_acme_orders_total", outcome="failed") == 1
    assert value(scraped, "mhp_cp_acme_orders_total", outcome="issued") == 0

    duration = "mhp_cp_http_request_duration_seconds_count"
    assert value(scraped, duration, route="/api/v1/tokens/", method="GET", status="200") == 1
    assert value(scraped, duration, route="/api/v1/tokens/", method="GET", status="401") == 1
    assert value(scraped, duration, route="/api/v1/tokens/{name}", method="GET", status="404") == 1
    assert value(scraped, duration, route="unmatched", method="GET", status="404") == 1
    assert value(scraped, duration, route="/token", method="POST", status="401") == 1
    assert value(scraped, duration, route="/api/v1/tokens/", method="other", status="405") == 1
    text = (await asyncio.to_thread(fetch, port))[1]
    assert "secret-tenant-name" not in text and "no/such/page" not in text

    grants = "mhp_cp_oauth_grants_total"
    assert value(scraped, grants, grant_type="other", outcome="invalid_client") == 1
    assert value(scraped, grants, grant_type="authorization_code", outcome=wrong_error) == 1
    assert value(scraped, grants, grant_type="client_credentials", outcome=no_resource.json()["error"]) == 1
    assert value(scraped, grants, grant_type="client_credentials", outcome="issued") == 1

    events = "mhp_cp_workflow_events"
    assert value(scraped, events, workflow="services", state="undelivered") == 3
    assert value(scraped, events, workflow="services", state="in_flight") == 0
    assert value(scraped, events, workflow="acme", state="dead") == 1
    assert value(scraped, "process_resident_memory_bytes") > 0

    assert (await asyncio.to_thread(fetch, port, "/other"))[0] == 404
    assert (await asyncio.to_thread(fetch, port, "/metrics", "POST"))[0] == 405


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression reads (identifiers followed by `{`, `[` or `)`, minus keywords)."""
    stripped = re.sub(r'"[^"]*"', '""', expr)  # label values and replacement strings are not names
    names = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[\{\[]", stripped))
    return {name for name in names if name not in _PROMQL_WORDS}


def dashboard_metrics(path: Path) -> set[str]:
    document: dict[str, Any] = json.loads(path.read_text())
    names: set[str] = set()
    for panel in document["panels"]:
        for target in panel["targets"]:
            names |= metric_names(target["expr"])
    return names


async def test_every_metric_a_dashboard_queries_is_exported(
    control_plane: tuple[httpx.AsyncClient, int], own_redis: RedisServer, tmp_path: Path
) -> None:
    assert [path.name for path in DASHBOARDS] == ["control-plane.json", "data-plane.json"]
    api, port = control_plane
    # Labelled series exist once something happened: one API call, one token request.
    assert (await api.get("/api/v1/tokens/", headers=ADMIN)).status_code == 200
    assert (await api.post("/token", data={"grant_type": "client_credentials"})).status_code == 401
    exported_cp = {name for name, _ in await scrape(port)}
    sync_client = redis.Redis.from_url(own_redis.url, password=own_redis.password, decode_responses=True)
    plane = start_data_plane(own_redis, tmp_path)
    try:
        plane.wait_for_version(0)
        status, _ = await asyncio.to_thread(fetch, plane.http_port, "/")  # a 404 (no proxy): one request
        assert status == 404
        exported_dp = {name for name, _ in samples(plane.metrics())}
    finally:
        plane.service.stop()
        sync_client.close()

    for path, exported in ((DASHBOARDS[0], exported_cp), (DASHBOARDS[1], exported_dp)):
        used = dashboard_metrics(path)
        assert len(used) >= 8, (path.name, used)
        # Histogram panels read _bucket/_sum/_count; every one of those is a sample name of a real scrape.
        missing = sorted(name for name in used if name not in exported)
        assert not missing, f"{path.name} queries metrics no scrape exports: {missing}"
        document = json.loads(path.read_text())
        assert {panel["id"] for panel in document["panels"]} == set(range(1, len(document["panels"]) + 1))
        assert all(panel["datasource"]["uid"] == "${datasource}" for panel in document["panels"])


def test_the_prometheus_config_scrapes_the_default_ports() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    defaults = load_settings()
    data_plane = jobs["mhp-data-plane"]["static_configs"][0]["targets"]
    # One target per worker: worker i listens on INTERNAL_PORT + i.
    assert data_plane == [
        f"{defaults.INTERNAL_HOST}:{defaults.INTERNAL_PORT + i}" for i in range(len(data_plane))
    ]
    assert jobs["mhp-control-plane"]["static_configs"][0]["targets"] == [
        f"{defaults.INTERNAL_HOST}:{defaults.CP_METRICS_PORT}"
    ]
    for path in DASHBOARDS:
        job = next(v for v in json.loads(path.read_text())["templating"]["list"] if v["name"] == "job")
        assert job["query"] in jobs


@pytest.mark.parametrize(
    ("request_line", "status_line"),
    [
        (b"GET /metrics HTTP/1.1", b"HTTP/1.1 200 OK"),
        (b"HEAD /metrics HTTP/1.1", b"HTTP/1.1 200 OK"),
        (b"GET /health HTTP/1.1", b"HTTP/1.1 404 Not Found"),
        (b"POST /metrics HTTP/1.1", b"HTTP/1.1 405 Method Not Allowed"),
    ],
)
async def test_metrics_listener_answers_carry_a_reason_phrase(
    control_plane: tuple[httpx.AsyncClient, int], request_line: bytes, status_line: bytes
) -> None:
    _api, port = control_plane
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request_line + b"\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 10)  # the listener closes after its one answer
    writer.close()
    assert answer.split(b"\r\n", 1)[0] == status_line
    if request_line.startswith(b"HEAD"):
        assert answer.endswith(b"\r\n\r\n")  # a head, no body
