"""Build one server `ssl.SSLContext` from PEM text held in memory.

Python's ssl module loads certificates only from paths, so the chain and the decrypted key are written to
anonymous memory files (memfd_create: never on disk, gone when closed) and loaded through /proc/self/fd.
Contexts are built when a certificate arrives, never during a handshake. Policy: TLS 1.2 or newer,
ALPN http/1.1 only, no compression, no renegotiation, one TLS 1.3 session ticket per full handshake.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

ALPN_PROTOCOLS = ("http/1.1",)
SESSION_TICKETS = 1


class ContextBuildError(Exception):
    """The certificate or key could not be loaded (malformed PEM, key does not match the certificate)."""


@contextmanager
def _memory_file(name: str, data: bytes) -> Iterator[str]:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def base_server_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_alpn_protocols(list(ALPN_PROTOCOLS))
    # TLS 1.3 session tickets per full handshake: OpenSSL sends two by default; one is enough for a client to
    # resume (as Go's crypto/tls, and so Caddy, sends), and each one costs about 5% of a server handshake.
    context.num_tickets = SESSION_TICKETS
    return context


def build_server_context(fullchain_pem: str, private_key_pem: bytes) -> ssl.SSLContext:
    context = base_server_context()
    load_chain(context, fullchain_pem, private_key_pem)
    return context


def load_chain(context: ssl.SSLContext, fullchain_pem: str, private_key_pem: bytes) -> None:
    try:
        with (
            _memory_file("mhp-chain", fullchain_pem.encode("ascii")) as chain_path,
            _memory_file("mhp-key", private_key_pem) as key_path,
        ):
            context.load_cert_chain(chain_path, key_path)
    except (ssl.SSLError, UnicodeEncodeError, OSError) as exc:
        raise ContextBuildError(f"cannot load certificate chain and key: {exc}") from exc
