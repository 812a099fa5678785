"""A throwaway self-signed certificate for the TLS workloads (ECDSA P-256, the key type Caddy and Let's
Encrypt default to), valid for bench.local and 127.0.0.1 because wrk sends the URL's host (127.0.0.1) as SNI.

Every peer loads the same files, so the handshake cost compared is the proxies', not the keys'.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.bench.peer_configs import BENCH_HOST


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert_path: Path
    key_path: Path
    combined_path: Path  # certificate then key, the single file HAProxy's `crt` takes


def self_signed_pem(common_name: str = BENCH_HOST) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(common_name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def write_tls_files(directory: Path) -> TlsFiles:
    cert_pem, key_pem = self_signed_pem()
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "cert.pem", directory / "key.pem", directory / "combined.pem")
    files.cert_path.write_bytes(cert_pem)
    files.key_path.write_bytes(key_pem)
    files.combined_path.write_bytes(cert_pem + key_pem)
    for path in (files.cert_path, files.key_path, files.combined_path):
        path.chmod(0o644)  # nginx reads it as root in the master, but keep workers able to as well
    return files
