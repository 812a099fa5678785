"""Who may claim a hostname, a certificate name and a target address, through a real `python -m control_plane`
process (issue 9, items 1, 6 and 9): zones the admin delegates, wildcards, names another owner serves,
certificate squatting, and targets outside the addresses an ordinary token may reach."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import redis.asyncio as aioredis

from shared import keys
from tests.harness.services import RedisServer

from .conftest import ADMIN, RunningControlPlane, bearer, serving

PROXIES = "/api/v1/proxy/targets/"
TOKENS = "/api/v1/tokens/"
CERTS = "/api/v1/certificates/"
ROUTES = "/api/v1/routes/"
PUBLIC = "http://93.184.216.34"


@pytest.fixture(scope="module")
def strict_control_plane(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningControlPlane]:
    """A control plane with the production default: ordinary tokens may target public addresses only."""
    log_dir = tmp_path_factory.mktemp("strict_control_plane")
    with serving(redis_server, log_dir, ALLOWED_TARGET_CIDRS="", BASE_DOMAIN="example.test") as plane:
        yield plane


@pytest.fixture
async def http(
    strict_control_plane: RunningControlPlane, redis_client: aioredis.Redis
) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=strict_control_plane.url, timeout=20) as client:
        yield client


async def _token(http: httpx.AsyncClient, name: str, zones: list[str] | None = None) -> dict[str, str]:
    response = await http.post(TOKENS, json={"name": name, "zones": zones or []}, headers=ADMIN)
    assert response.status_code == 201, response.text
    return bearer(response.json()["token"])


async def _proxy(http: httpx.AsyncClient, who: dict[str, str], hostname: str, target: str = PUBLIC) -> int:
    body = {"hostname": hostname, "target_url": target, "enable_https": False}
    return (await http.post(PROXIES, json=body, headers=who)).status_code


async def test_zones_decide_who_may_claim_names_and_wildcards(
    http: httpx.AsyncClient, redis_client: aioredis.Redis
) -> None:
    zoned = await _token(http, "zoned", ["Zone-A.example.com."])
    free = await _token(http, "free")
    assert (await http.get(f"{TOKENS}zoned", headers=ADMIN)).json()["zones"] == ["zone-a.example.com"]

    assert await _proxy(http, zoned, "*.zone-a.example.com") == 201
    assert await _proxy(http, zoned, "app.zone-a.example.com") == 201
    assert await _proxy(http, zoned, "outside.example.net") == 403  # only under its zones
    assert await _proxy(http, free, "x.zone-a.example.com") == 403  # inside another token's zone...
    await _token(http, "quiet", ["zone-b.example.com"])
    assert await _proxy(http, free, "x.zone-b.example.com") == 403  # ...even one that serves nothing yet
    assert await _proxy(http, free, "*.free.example.net") == 403  # wildcards need a zone
    assert await _proxy(http, free, "plain.example.net") == 201
    for catch_all in ("127.0.0.1", "93.184.216.34", "localhost", "intranet"):
        assert await _proxy(http, free, catch_all) == 403, catch_all  # requests by address: admin's
    assert await _proxy(http, ADMIN, "localhost") == 201

    # A name another owner's wildcard serves is that owner's.
    assert await _proxy(http, ADMIN, "*.shared.example.org") == 201
    refused = await http.post(
        PROXIES, json={"hostname": "app.shared.example.org", "target_url": PUBLIC}, headers=free
    )
    assert refused.status_code == 403 and "wildcard proxy '*.shared.example.org'" in refused.json()["detail"]
    assert await _proxy(http, ADMIN, "app.shared.example.org") == 201  # the admin may

    # Zones never overlap between tokens; only the admin delegates them.
    overlap = await http.put(f"{TOKENS}free", json={"zones": ["example.com"]}, headers=ADMIN)
    assert overlap.status_code == 409 and "zone-a.example.com" in overlap.json()["detail"]
    own = await http.put(f"{TOKENS}free", json={"zones": ["free.example.net"]}, headers=free)
    assert own.status_code == 403
    assert (
        await http.put(f"{TOKENS}free", json={"cert_email": "f@example.net"}, headers=free)
    ).status_code == 200
    assert sorted(await redis_client.hkeys(keys.token_zones())) == [
        "zone-a.example.com",
        "zone-b.example.com",
    ]

    # Deleting the token ends its delegation with everything it owned.
    assert (await http.delete(f"{TOKENS}zoned", headers=ADMIN)).status_code == 204
    assert await redis_client.hkeys(keys.token_zones()) == ["zone-b.example.com"]
    assert await _proxy(http, free, "x.zone-a.example.com") == 201


async def test_certificates_name_only_hostnames_of_the_callers_own_proxies(http: httpx.AsyncClient) -> None:
    """The squatting attack: bob asks for alice's hostname (and the auth host) before alice does."""
    alice = await _token(http, "alice")
    bob = await _token(http, "bob", ["bob.example.org"])
    assert await _proxy(http, alice, "shop.example.net") == 201

    def cert(name: str, *domains: str) -> dict[str, object]:
        return {"cert_name": name, "domains": list(domains)}

    for domains in (["shop.example.net"], ["auth.example.test"], ["bob.example.org", "shop.example.net"]):
        squat = await http.post(CERTS, json=cert("squat", *domains), headers=bob)
        assert squat.status_code == 403, (domains, squat.text)
    assert "not served by a proxy of this token" in squat.json()["detail"]
    # Names inside bob's own zone are his even before a proxy serves them.
    assert (await http.post(CERTS, json=cert("bob", "www.bob.example.org"), headers=bob)).status_code == 201
    # alice's own request is not blocked by anything bob did.
    assert (await http.post(CERTS, json=cert("shop", "shop.example.net"), headers=alice)).status_code == 201
    # The admin may name anything.
    assert (await http.post(CERTS, json=cert("ops", "ops.example.net"), headers=ADMIN)).status_code == 201


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:8080",
        "http://localhost:3000",
        "http://app.localhost",
        "http://[::1]:8080",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.5:80",
        "http://192.168.1.10",
        "http://[::ffff:127.0.0.1]:6379",
    ],
)
async def test_ordinary_tokens_may_not_target_non_public_addresses(
    http: httpx.AsyncClient, target: str
) -> None:
    tenant = await _token(http, "tenant")
    response = await http.post(
        PROXIES, json={"hostname": "t.example.net", "target_url": target}, headers=tenant
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "target_url"]
    assert "ALLOWED_TARGET_CIDRS" in response.json()["detail"][0]["msg"]
    # Nor slip it in later, nor through a route.
    assert await _proxy(http, tenant, "t.example.net") == 201
    patched = await http.patch(f"{PROXIES}t.example.net", json={"target_url": target}, headers=tenant)
    assert patched.status_code == 422
    route = {
        "path_pattern": "/x",
        "target_url": target,
        "scope": "proxies",
        "proxy_hostnames": ["t.example.net"],
    }
    assert (await http.post(ROUTES, json=route, headers=tenant)).status_code == 422
    # The admin's own proxies are not restricted.
    assert await _proxy(http, ADMIN, "internal.example.net", target) == 201


async def test_allowed_cidrs_open_a_range_but_never_the_systems_own_ports(
    running_control_plane: RunningControlPlane, redis_client: aioredis.Redis
) -> None:
    """The shared fixture's control plane allows 127.0.0.0/8 (ALLOWED_TARGET_CIDRS), as a one-host setup."""
    async with httpx.AsyncClient(base_url=running_control_plane.url, timeout=20) as http:
        tenant = await _token(http, "tenant")
        assert await _proxy(http, tenant, "ok.example.net", "http://127.0.0.1:3000") == 201
        api_port = running_control_plane.env["API_PORT"]
        redis_port = running_control_plane.env["REDIS_URL"].rsplit(":", 1)[1].split("/")[0]
        for port in (api_port, redis_port, "9100", "9101", "80", "443"):
            body = {"hostname": f"p{port}.example.net", "target_url": f"http://127.0.0.1:{port}"}
            response = await http.post(PROXIES, json=body, headers=tenant)
            assert response.status_code == 422, (port, response.text)
            assert "the system itself serves" in response.json()["detail"][0]["msg"]
