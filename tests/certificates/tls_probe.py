"""Real TLS on loopback for certificate tests: serve a certificate table, and handshake as a client with SNI.

The server is asyncio's TLS over the data plane's `dispatching_context` (the same SNI callback the listener
uses). The client is the stdlib ssl module in a worker thread; it verifies the chain when given a root.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from cryptography import x509

from data_plane.tls.cert_store import CertificateTable, dispatching_context
from shared.encryption import Keyring
from shared.models import FallbackCertificate


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


@asynccontextmanager
async def tls_server(
    current_table: Callable[[], CertificateTable], fallback: FallbackCertificate, keyring: Keyring
) -> AsyncIterator[int]:
    context = dispatching_context(current_table, fallback, keyring)
    server = await asyncio.start_server(_echo, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.close()
        await server.wait_closed()


@dataclass
class Peer:
    certificate: x509.Certificate
    alpn: str | None
    version: str | None

    @property
    def serial(self) -> str:
        return format(self.certificate.serial_number, "x")

    @property
    def common_name(self) -> str:
        attrs = self.certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        return str(attrs[0].value) if attrs else ""


def client_context(root_pem: str | None) -> ssl.SSLContext:
    if root_pem is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cadata=root_pem)
    context.set_alpn_protocols(["http/1.1"])
    return context


def _handshake(port: int, server_name: str | None, root_pem: str | None) -> Peer:
    context = client_context(root_pem)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            return Peer(x509.load_der_x509_certificate(der), tls.selected_alpn_protocol(), tls.version())


async def handshake(port: int, server_name: str | None, root_pem: str | None = None) -> Peer:
    """Connect with SNI `server_name` (None: no SNI); verifies chain + hostname when `root_pem` is given."""
    return await asyncio.to_thread(_handshake, port, server_name, root_pem)


class OpenConnection:
    """A TLS connection kept open across a certificate swap (blocking socket; call from a thread)."""

    def __init__(self, port: int, server_name: str, root_pem: str) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.tls = client_context(root_pem).wrap_socket(raw, server_hostname=server_name)
        der = self.tls.getpeercert(binary_form=True)
        assert der is not None
        self.certificate = x509.load_der_x509_certificate(der)

    def echo(self, data: bytes) -> bytes:
        self.tls.sendall(data)
        received = b""
        while len(received) < len(data):
            chunk = self.tls.recv(65536)
            if not chunk:
                break
            received += chunk
        return received

    def close(self) -> None:
        self.tls.close()
