"""A throwaway self-signed certificate for the TLS workloads (ECDSA P-256, the key type Caddy and Let's
Encrypt default to), valid for bench.local and 127.0.0.1 because wrk sends the URL's host (127.0.0.1) as SNI.

Every peer loads the same files, so the handshake cost compared is the proxies', not the keys'. Built by
data_plane.tls.self_signed, the builder of the data plane's own fallback certificate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from data_plane.tls.self_signed import self_signed_pem
from tests.bench.peer_configs import BENCH_HOST


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert_path: Path
    key_path: Path
    combined_path: Path  # certificate then key, the single file HAProxy's `crt` takes


def write_tls_files(directory: Path) -> TlsFiles:
    cert_pem, key_pem = self_signed_pem(BENCH_HOST, valid_days=2, ip_addresses=("127.0.0.1",))
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "cert.pem", directory / "key.pem", directory / "combined.pem")
    files.cert_path.write_bytes(cert_pem)
    files.key_path.write_bytes(key_pem)
    files.combined_path.write_bytes(cert_pem + key_pem)
    for path in (files.cert_path, files.key_path, files.combined_path):
        path.chmod(0o644)  # nginx reads it as root in the master, but keep workers able to as well
    return files
