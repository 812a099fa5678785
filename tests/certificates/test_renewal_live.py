"""Renewal on a live data plane: a real `python -m data_plane` proxies a hostname to a real backend over a
certificate Pebble issued through the control plane's worker; renewing it swaps what NEW handshakes get,
while a keep-alive connection opened before the renewal keeps serving requests on its original certificate.

The certificate is created BEFORE the proxy, for the proxy's hostname: a domain belongs to one certificate,
and a proxy with enable_https (left at its default, on) asks for an automatic certificate only when no
certificate covers its hostname yet, so this order keeps the one certificate under test the only one.

All requests go over HTTPS (never plain HTTP, which may answer 308 to https for a proxy with a certificate).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h11
import httpx
import pytest
from cryptography import x509

from tests.data_plane.backends import HttpBackend
from tests.harness.pebble import Pebble
from tests.harness.services import RedisServer, free_port

from .conftest import ADMIN, CERTS, wait_for_status
from .pebble_data_plane import start_data_plane
from .tls_probe import client_context, handshake

pytestmark = pytest.mark.certificates

PROXIES = "/api/v1/proxy/targets/"
HOSTNAME = "live.renewal.example.com"
# Guards against a hang only: a request that never completes fails the test instead of stalling it.
EXCHANGE_GUARD_SECONDS = 10.0


class KeptConnection:
    """One TLS connection to the data plane carrying sequential HTTP/1.1 requests (h11 client side).

    Every request of an instance goes over the same socket: there is no reconnect, so an answer to a second
    request proves the connection was kept alive and reused."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, port: int, server_name: str, root_pem: str) -> KeptConnection:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context(root_pem), server_hostname=server_name
        )
        return cls(reader, writer)

    @property
    def peer_serial(self) -> str:
        tls: ssl.SSLObject = self.writer.get_extra_info("ssl_object")
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return format(x509.load_der_x509_certificate(der).serial_number, "x")

    async def get(self, target: str) -> tuple[int, dict[str, str], bytes]:
        """Send GET `target` and read the whole response; the connection stays usable if it allows."""
        request = h11.Request(method="GET", target=target, headers=[("host", HOSTNAME)])
        self.writer.write(self.conn.send(request) + self.conn.send(h11.EndOfMessage()))
        await self.writer.drain()
        status = 0
        headers: dict[str, str] = {}
        body = bytearray()
        async with asyncio.timeout(EXCHANGE_GUARD_SECONDS):
            while True:
                event = self.conn.next_event()
                if event is h11.NEED_DATA:
                    self.conn.receive_data(await self.reader.read(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    headers = {k.decode(): v.decode("latin-1") for k, v in event.headers}
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:
                    raise AssertionError(f"unexpected HTTP event {event!r}")
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        return status, headers, bytes(body)

    @property
    def reusable(self) -> bool:
        return self.conn.our_state is h11.IDLE and self.conn.their_state is h11.IDLE

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass


@pytest.fixture
def backend() -> Iterator[HttpBackend]:
    server = HttpBackend()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def data_plane_https_port(redis_server: RedisServer, pebble: Pebble, tmp_path: Path) -> Iterator[int]:
    data_plane = start_data_plane(redis_server, pebble, tmp_path, free_port())
    try:
        yield data_plane.https_port
    finally:
        data_plane.service.stop()


async def served_through_proxy(port: int, root: str, serial: str, target: str) -> dict[str, Any]:
    """Poll with NEW connections until one presents `serial` and the proxy answers `target` with 200.

    The data plane picks up certificates and proxies by polling Redis, so both appear a moment after the
    control plane commits them. Returns what the backend echoed."""
    deadline = time.monotonic() + 10
    last: tuple[str, int, bytes] = ("", 0, b"")
    while time.monotonic() < deadline:
        probe = await KeptConnection.open(port, HOSTNAME, root)
        try:
            status, _headers, body = await probe.get(target)
            last = (probe.peer_serial, status, body)
        finally:
            await probe.close()
        if last[0] == serial and status == 200:
            echoed: dict[str, Any] = json.loads(body)
            return echoed
        await asyncio.sleep(0.1)
    raise AssertionError(
        f"never served serial {serial} with a 200 for {target}: (serial, status, body)={last}"
    )


async def test_renewal_swaps_new_handshakes_while_a_kept_alive_connection_keeps_serving(
    api_with_worker: httpx.AsyncClient, data_plane_https_port: int, backend: HttpBackend, pebble: Pebble
) -> None:
    port = data_plane_https_port
    root = pebble.root_pem()
    created = await api_with_worker.post(
        CERTS, json={"cert_name": "live", "domains": [HOSTNAME]}, headers=ADMIN
    )
    assert created.status_code == 201, created.text
    first = await wait_for_status(api_with_worker, "live", {"active", "failed"})
    assert first["status"] == "active", first["error"]
    proxy = await api_with_worker.post(
        PROXIES, json={"hostname": HOSTNAME, "target_url": backend.url}, headers=ADMIN
    )
    assert proxy.status_code == 201, proxy.text
    assert proxy.json()["enable_https"] is True
    await served_through_proxy(port, root, str(first["serial"]), "/echo?probe=1")

    kept = await KeptConnection.open(port, HOSTNAME, root)
    try:
        assert kept.peer_serial == first["serial"]
        status, headers, body = await kept.get("/echo?step=before-renewal")
        assert status == 200, body
        assert "close" not in headers.get("connection", "").lower()
        echoed = json.loads(body)
        assert echoed["target"] == "/echo?step=before-renewal"
        assert dict(echoed["headers"]).get("x-forwarded-proto") == "https"
        assert kept.reusable

        renewed = await api_with_worker.post(f"{CERTS}live/renew", headers=ADMIN)
        assert renewed.status_code == 202, renewed.text
        second = await wait_for_status(api_with_worker, "live", {"active"}, serial_not=str(first["serial"]))
        assert second["serial"] != first["serial"]

        # A NEW handshake (chain verified against Pebble's root) gets the renewed certificate, and the proxy
        # answers on it.
        echoed = await served_through_proxy(port, root, str(second["serial"]), "/echo?step=new")
        assert echoed["target"] == "/echo?step=new"
        assert (await handshake(port, HOSTNAME, root)).serial == second["serial"]

        # The connection opened before the renewal (the same socket: KeptConnection never reconnects, and
        # a closed one fails the read) still carries a request to the backend, on the old certificate.
        status, _headers, body = await kept.get("/echo?step=after-renewal")
        assert status == 200, body
        assert json.loads(body)["target"] == "/echo?step=after-renewal"
        assert kept.peer_serial == first["serial"]
    finally:
        await kept.close()
    seen = [request["target"] for request in backend.requests]
    assert seen.index("/echo?step=before-renewal") < seen.index("/echo?step=after-renewal")
