"""A throwaway CA and a server certificate for 127.0.0.1, generated per test run."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from tests.harness.tls_material import write_test_ca


@dataclass
class TlsMaterial:
    ca_pem: str
    server_context: ssl.SSLContext


def make_tls(workdir: Path) -> TlsMaterial:
    material = write_test_ca(workdir, dns_names=(), ip_addresses=("127.0.0.1",), valid_days=1)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(material.cert_path, material.key_path)
    return TlsMaterial(material.ca_pem, context)
