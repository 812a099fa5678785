"""A protected proxy on a real data plane, for the tests that attack one: the RSA signing key whose JWKS is
stored where the control plane publishes it, the data plane with that issuer (`plane`), the auth config
written to Redis exactly as the control plane writes it (one config-write transaction), tokens, and a
request helper. tests/data_plane/conftest.py provides the
fixtures to every data-plane test."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from control_plane.oauth.signing import SigningKeys
from shared import keys
from shared.models import ChangeEvent, ProxyAuthConfig, ProxyResource, ProxyTarget
from tests.data_plane.conftest import DataPlane, start_data_plane
from tests.data_plane.helpers import get
from tests.harness.services import RedisServer

ISSUER = "https://auth.test.localhost"
HOST = "mcp.test"
AUTH_HOST = "auth.test.localhost"


@pytest.fixture(scope="module")
def signer() -> SigningKeys:
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return SigningKeys.load(base64.b64encode(pem).decode())


@pytest.fixture
def plane(redis_sync: redis.Redis, redis_server: RedisServer, tmp_path: Path, signer: SigningKeys) -> Any:
    redis_sync.set(keys.oauth_jwks(), json.dumps(signer.jwks))
    dp = start_data_plane(redis_server, tmp_path, {"OAUTH_ISSUER": ISSUER, "BASE_DOMAIN": "test.localhost"})
    try:
        yield dp
    finally:
        dp.service.stop()


def write_auth(
    client: redis.Redis,
    plane: DataPlane,
    *,
    proxies: Iterable[ProxyTarget] = (),
    auth: Iterable[ProxyAuthConfig] = (),
    resources: Iterable[ProxyResource] = (),
    raw_auth: dict[str, str] | None = None,
    delete_auth: Iterable[str] = (),
) -> None:
    """One config-write transaction (objects, version, one change event each), then PUBLISH; wait for it."""
    proxies, auth, resources, delete_auth = list(proxies), list(auth), list(resources), list(delete_auth)
    changed = [("proxy", p.hostname) for p in proxies] + [("auth", c.hostname) for c in auth]
    changed += [("auth", r.hostname) for r in resources]
    changed += [("auth", hostname) for hostname in (*(raw_auth or {}), *delete_auth)]
    with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(keys.config_version())
                version = int(pipe.get(keys.config_version()) or 0) + 1  # type: ignore[arg-type]
                pipe.multi()
                for proxy in proxies:
                    pipe.hset(keys.proxies(), proxy.hostname, proxy.model_dump_json())
                for config in auth:
                    pipe.hset(keys.proxy_auth(), config.hostname, config.model_dump_json())
                for resource in resources:
                    pipe.hset(keys.proxy_resources(), resource.hostname, resource.model_dump_json())
                for hostname, raw in (raw_auth or {}).items():
                    pipe.hset(keys.proxy_auth(), hostname, raw)
                for hostname in delete_auth:
                    pipe.hdel(keys.proxy_auth(), hostname)
                pipe.incr(keys.config_version())
                # One event per changed object, as the control plane writes them (data planes apply
                # changes piecewise from the stream).
                for kind, name in changed:
                    event = ChangeEvent(version=version, kind=kind, action="updated", name=name)  # type: ignore[arg-type]
                    pipe.xadd(keys.changes_stream(), event.to_stream_fields(), maxlen=10000, approximate=True)
                pipe.execute()
                break
            except redis.WatchError:
                continue
    client.publish(keys.changes_channel(), str(version))
    plane.wait_for_version(version)


def protect(
    client: redis.Redis, plane: DataPlane, backend_url: str, hostname: str = HOST, **auth: Any
) -> None:
    write_auth(
        client,
        plane,
        proxies=[ProxyTarget(hostname=hostname, target_url=backend_url)],
        auth=[ProxyAuthConfig(hostname=hostname, **{"allowed_users": ["alice"], **auth})],
        resources=[ProxyResource(hostname=hostname, path="/mcp", resource_name="Test tools")],
    )


def resource(plane: DataPlane, hostname: str = HOST) -> str:
    return f"http://{hostname}:{plane.http_port}/mcp"


def token(signer: SigningKeys, plane: DataPlane, **overrides: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "github:1001",
        "aud": resource(plane),
        "exp": now + 600,
        "iat": now,
        "jti": f"jti-{time.monotonic_ns()}",
        "scope": "mcp",
        "client_id": "mhp_test",
        "login": "alice",
        "orgs": ["acme"],
    }
    claims.update(overrides)
    return signer.sign(claims)


def call(
    plane: DataPlane,
    path: str = "/mcp/echo",
    *,
    bearer: str | None = None,
    method: str = "POST",
    body: bytes | None = b"{}",
    headers: dict[str, str] | None = None,
    host: str = HOST,
) -> tuple[int, dict[str, str], bytes]:
    all_headers = {"Host": f"{host}:{plane.http_port}", **(headers or {})}
    if bearer is not None:
        all_headers["Authorization"] = f"Bearer {bearer}"
    if method in ("GET", "HEAD"):
        body = None
    return get(plane, path, host=all_headers.pop("Host"), method=method, body=body, headers=all_headers)
