"""Our data plane as a benchmark target: a real Redis, one ProxyTarget (and, for the TLS workloads, the run's
certificate) written by the config-write contract, and `python -m data_plane` pinned to the proxy core.

The config write is the one every writer follows (shared semantics): one MULTI/EXEC that stores the object,
bumps the config version and appends a change event, then a PUBLISH naming the new version.

TLS: the bench certificate is stored the way the control plane stores an issued one (private key encrypted
under a KEK made for this run, context "certificate:<name>") and is also the shared fallback certificate. wrk
sends the URL's host as SNI, i.e. "127.0.0.1", and the data plane selects certificates by DNS name only, so
without that every wrk handshake would get a fallback the data plane generated; the peers serve the bench
certificate whatever the SNI, and so do we. Both are written before the data plane starts (it loads them).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Literal

import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from control_plane.oauth.signing import SigningKeys
from shared import keys
from shared.encryption import FALLBACK_KEY_CONTEXT, Keyring, certificate_key_context, new_key_b64
from shared.models import (
    Certificate,
    ChangeEvent,
    FallbackCertificate,
    ProxyAuthConfig,
    ProxyResource,
    ProxyTarget,
)
from tests.bench.peer_configs import BENCH_HOST, PROTECTED_HOST, SSE_HOST, WS_HOST, StreamPorts
from tests.bench.targets import HOST, CorePlan, Target, pin_running, pinned
from tests.bench.tls_material import TlsFiles
from tests.harness.services import RedisServer, ServiceProcess, free_port, port_open, start_redis

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCH_CERT_NAME = "bench"
# Not an ACME certificate: the record says where it came from, and that it is already issued for its domains.
BENCH_DIRECTORY_URL = "https://bench.invalid/self-signed"


def unavailable_reason() -> str | None:
    """Why `python -m data_plane` cannot run here, or None when it can."""
    try:
        spec = importlib.util.find_spec("data_plane.__main__")
    except ModuleNotFoundError:
        spec = None
    if spec is None:
        return "data_plane/__main__.py does not exist yet (python -m data_plane is not available)"
    return None


def _client(server: RedisServer) -> redis.Redis:
    return redis.Redis(host=server.host, port=server.port, password=server.password, decode_responses=True)


def write_config(
    server: RedisServer,
    kind: Literal["proxy", "certificate", "auth"],
    name: str,
    puts: list[tuple[str, str, str]],
) -> int:
    """HSET every (hash key, field, value) of `puts` following the config-write contract, with one change
    event of `kind` naming `name`; returns the new config version."""
    client = _client(server)
    try:
        with client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    # WATCH so the version named in the change event is exactly the one INCR produces.
                    pipe.watch(keys.config_version())  # type: ignore[no-untyped-call]
                    version = int(pipe.get(keys.config_version()) or 0) + 1
                    event = ChangeEvent(version=version, kind=kind, action="created", name=name)
                    pipe.multi()
                    for key, field, value in puts:
                        pipe.hset(key, field, value)
                    pipe.incr(keys.config_version())
                    fields: dict[Any, Any] = event.to_stream_fields()
                    pipe.xadd(keys.changes_stream(), fields, maxlen=10000, approximate=True)
                    pipe.execute()
                    break
                except redis.WatchError:
                    continue
        client.publish(keys.changes_channel(), str(version))
        return version
    finally:
        client.close()


def write_proxy(server: RedisServer, proxy: ProxyTarget) -> int:
    """Store `proxy` following the config-write contract; returns the new config version."""
    return write_config(
        server, "proxy", proxy.hostname, [(keys.proxies(), proxy.hostname, proxy.model_dump_json())]
    )


BENCH_ISSUER = "https://auth.bench.local"
BENCH_USER = "bench"


def protect(server: RedisServer, backend_port: int) -> str:
    """A protected proxy (PROTECTED_HOST, to the same backend) as the control plane writes one, with the
    signing key's JWKS where the control plane publishes it; returns a valid access token for it."""
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    signer = SigningKeys.load(base64.b64encode(pem).decode())
    client = _client(server)
    try:
        client.set(keys.oauth_jwks(), json.dumps(signer.jwks))
    finally:
        client.close()
    proxy = ProxyTarget(
        hostname=PROTECTED_HOST, target_url=f"http://{HOST}:{backend_port}", redirect_http_to_https=False
    )
    auth = ProxyAuthConfig(hostname=PROTECTED_HOST, allowed_users=[BENCH_USER])
    resource = ProxyResource(hostname=PROTECTED_HOST, path="")
    write_config(
        server,
        "auth",
        PROTECTED_HOST,
        [
            (keys.proxies(), PROTECTED_HOST, proxy.model_dump_json()),
            (keys.proxy_auth(), PROTECTED_HOST, auth.model_dump_json()),
            (keys.proxy_resources(), PROTECTED_HOST, resource.model_dump_json()),
        ],
    )
    now = int(time.time())
    return signer.sign(
        {
            "iss": BENCH_ISSUER,
            "sub": "github:1",
            "aud": f"http://{PROTECTED_HOST}",
            "exp": now + 3600,
            "iat": now,
            "jti": f"bench-{now}",
            "scope": "mcp",
            "client_id": "mhp_bench",
            "login": BENCH_USER,
        }
    )


def bench_certificate(cert_pem: bytes, key_pem: bytes, keyring: Keyring) -> Certificate:
    """The run's certificate as the control plane would store it once issued (key encrypted at rest)."""
    leaf = x509.load_pem_x509_certificate(cert_pem)
    issued_at = leaf.not_valid_before_utc.timestamp()
    return Certificate(
        cert_name=BENCH_CERT_NAME,
        domains=[BENCH_HOST],
        directory_url=BENCH_DIRECTORY_URL,
        status="active",
        fullchain_pem=cert_pem.decode("ascii"),
        private_key_encrypted=keyring.encrypt(key_pem, context=certificate_key_context(BENCH_CERT_NAME)),
        issuer=leaf.issuer.rfc4514_string(),
        serial=format(leaf.serial_number, "x"),
        not_before=issued_at,
        not_after=leaf.not_valid_after_utc.timestamp(),
        fingerprint_sha256=leaf.fingerprint(hashes.SHA256()).hex(),
        issued_at=issued_at,
        issued_domains=[BENCH_HOST],
        issued_directory_url=BENCH_DIRECTORY_URL,
    )


def store_tls(server: RedisServer, tls: TlsFiles) -> str:
    """Store the bench certificate (and make it the fallback) under a fresh KEK; returns the KEK (base64)
    for KEY_ENCRYPTION_KEY_B64."""
    kek_b64 = new_key_b64()
    keyring = Keyring.from_keys_b64(kek_b64)
    cert_pem, key_pem = tls.cert_path.read_bytes(), tls.key_path.read_bytes()
    cert = bench_certificate(cert_pem, key_pem, keyring)
    write_config(
        server,
        "certificate",
        cert.cert_name,
        [
            (keys.certificates(), cert.cert_name, cert.model_dump_json()),
            (keys.certificate_domains(), BENCH_HOST, cert.cert_name),
        ],
    )
    fallback = FallbackCertificate(
        common_name=BENCH_HOST,
        cert_pem=cert.fullchain_pem,
        private_key_encrypted=keyring.encrypt(key_pem, context=FALLBACK_KEY_CONTEXT),
    )
    client = _client(server)
    try:
        # What data_plane.tls.fallback.ensure_fallback does (SET NX, no version bump); the data plane then
        # finds it there and serves it instead of generating its own.
        client.set(keys.fallback_certificate(), fallback.model_dump_json(), nx=True)
    finally:
        client.close()
    return kek_b64


def start_ours(
    workdir: Path,
    plan: CorePlan,
    backend_port: int,
    tls: TlsFiles | None,
    *,
    streams: StreamPorts | None = None,
) -> Target:
    """With `tls`, the HTTPS listener serves the run's certificate on its own port (Target.tls_port). With
    `streams`, the WebSocket and SSE hosts are routed to their backends."""
    port = free_port(HOST)
    # HTTPS_PORT 0 turns the HTTPS listener off.
    tls_port = free_port(HOST) if tls is not None else None
    target = Target("ours", port, tls_port)
    redis_server = start_redis(workdir / "redis")
    target.services.append(redis_server.service)
    pin_running(redis_server.service.pid, plan.load_core)
    # The peers serve both ports alike; by default we would answer plain HTTP with a 308 to https:// once the
    # bench certificate is served.
    proxy = ProxyTarget(
        hostname=BENCH_HOST, target_url=f"http://{HOST}:{backend_port}", redirect_http_to_https=False
    )
    write_proxy(redis_server, proxy)
    if streams is not None:
        for hostname, port_of in ((WS_HOST, streams.ws), (SSE_HOST, streams.sse)):
            write_proxy(
                redis_server,
                ProxyTarget(
                    hostname=hostname, target_url=f"http://{HOST}:{port_of}", redirect_http_to_https=False
                ),
            )
    target.bearer_token = protect(redis_server, backend_port)
    kek_b64 = store_tls(redis_server, tls) if tls is not None else ""
    env = {
        **os.environ,
        "REDIS_URL": redis_server.url,
        "REDIS_PASSWORD": redis_server.password,
        "BIND_HOST": HOST,
        "HTTP_PORT": str(port),
        "HTTPS_PORT": str(tls_port or 0),
        "KEY_ENCRYPTION_KEY_B64": kek_b64,
        # The listeners we do not measure still bind: keep them on free loopback ports.
        "PROXY_PROTOCOL_PORT": str(free_port(HOST)),
        "INTERNAL_HOST": HOST,
        "INTERNAL_PORT": str(free_port(HOST)),
        "MHP_ENV_FILE": os.devnull,
        "LOG_LEVEL": "WARNING",
        "OAUTH_ISSUER": BENCH_ISSUER,
        # The idle-connection row holds 10,000 client connections at once.
        "DP_MAX_CONNECTIONS": "20000",
    }
    argv = [sys.executable, "-m", "data_plane"]
    service = ServiceProcess(
        name="data plane",
        argv=pinned(argv, plan.proxy_core),
        log_path=workdir / "data-plane.out",
        ready=lambda: port_open(HOST, port) and (tls_port is None or port_open(HOST, tls_port)),
        env=env,
        cwd=REPO_ROOT,
    )
    target.measured = service
    target.services.append(service)
    service.start()
    return target
