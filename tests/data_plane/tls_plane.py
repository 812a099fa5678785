"""A real data plane with its HTTPS listener on, and TLS client helpers for talking to it.

`start_tls_plane` starts `python -m data_plane` with a KEK and an HTTPS port (plus any extra env) and waits
until the TLS port accepts. `store_certificate` writes a certificate and bumps the config version the way
every writer does, then waits for the plane to serve that version. `https_request` speaks HTTP/1.1 over TLS
with an explicit SNI name (http.client would send the IP)."""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from pathlib import Path

import redis
from cryptography import x509

from shared import keys
from shared.models import Certificate, ChangeEvent
from tests.certificates.conftest import KEK_B64
from tests.data_plane.conftest import DataPlane, start_data_plane
from tests.harness.services import RedisServer, free_port


def start_tls_plane(
    redis_server: RedisServer, workdir: Path, extra_env: dict[str, str] | None = None
) -> tuple[DataPlane, int]:
    https_port = free_port()
    plane = start_data_plane(
        redis_server,
        workdir,
        extra_env={
            "HTTPS_PORT": str(https_port),
            "KEY_ENCRYPTION_KEY_B64": KEK_B64,
            "BASE_DOMAIN": "fallback.test",
            **(extra_env or {}),
        },
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            # A full handshake, not a bare connect: that would count as a failed ("closed") handshake.
            peer_certificate(https_port, "ready.test", None)
            return plane, https_port
        except OSError:
            if time.monotonic() > deadline:
                plane.service.stop()
                raise AssertionError(plane.service.log_tail()) from None
            time.sleep(0.05)


def bump(client: redis.Redis, plane: DataPlane) -> None:
    version = int(client.incr(keys.config_version()))
    client.publish(keys.changes_channel(), str(version))
    plane.wait_for_version(version)


def store_certificate(client: redis.Redis, plane: DataPlane, cert: Certificate) -> None:
    """Store a certificate as the control plane does: row, version and change event in one MULTI."""
    with client.pipeline(transaction=True) as pipe:
        pipe.watch(keys.config_version())
        version = int(pipe.get(keys.config_version()) or 0) + 1  # type: ignore[arg-type]
        pipe.multi()
        pipe.hset(keys.certificates(), cert.cert_name, cert.model_dump_json())
        pipe.incr(keys.config_version())
        event = ChangeEvent(version=version, kind="certificate", action="updated", name=cert.cert_name)
        pipe.xadd(keys.changes_stream(), event.to_stream_fields(), maxlen=10000, approximate=True)
        pipe.execute()
    client.publish(keys.changes_channel(), str(version))
    plane.wait_for_version(version)


def client_context(root_pem: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=root_pem) if root_pem else ssl._create_unverified_context()


def peer_certificate(port: int, server_name: str, root_pem: str | None) -> x509.Certificate:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with client_context(root_pem).wrap_socket(raw, server_hostname=server_name) as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            return x509.load_der_x509_certificate(der)


def https_request(
    port: int,
    server_name: str,
    path: str,
    root_pem: str | None,
    *,
    method: str = "GET",
    host: str | None = None,
) -> tuple[int, list[tuple[str, str]], bytes]:
    """One request over a fresh TLS connection; returns status, headers (lower-case names, in order), body."""
    context = client_context(root_pem)
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn.sock = context.wrap_socket(raw, server_hostname=server_name)
    try:
        conn.request(method, path, headers={"Host": host or server_name})
        response = conn.getresponse()
        return response.status, [(k.lower(), v) for k, v in response.getheaders()], response.read()
    finally:
        conn.close()
