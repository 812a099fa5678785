"""Start Debian's `pebble` (an RFC 8555 test CA) and `pebble-challtestsrv` (its DNS) on loopback.

- A throwaway CA made here with `cryptography` signs Pebble's own HTTPS certificate (127.0.0.1 / localhost);
  clients trust it through `ca_bundle` (our ACME_CA_BUNDLE setting).
- challtestsrv answers every A query with 127.0.0.1 (no AAAA), and Pebble resolves through it (-dnsserver),
  so any test domain validates against OUR HTTP-01 responder on `http_port` (Pebble's httpPort).
- PEBBLE_VA_NOSLEEP=1 (no artificial validation delay) and PEBBLE_WFE_NONCEREJECT=0 (no random badNonce
  rejections: acme-python retries those only once, which would make tests flaky). Validation is REAL:
  PEBBLE_VA_ALWAYS_VALID is never set, and the fixture refuses to run if the environment sets it.
- Pebble's issuing root comes from its management endpoint (`root_pem()`), to verify issued chains.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.harness.services import ServiceProcess, ServiceStartError, free_port, port_open
from tests.harness.tls_material import write_test_ca


@dataclass
class Pebble:
    directory_url: str
    management_url: str
    ca_bundle: Path
    http_port: int
    dns_port: int
    pebble: ServiceProcess
    challtestsrv: ServiceProcess

    def _get(self, path: str) -> bytes:
        context = ssl.create_default_context(cafile=str(self.ca_bundle))
        with urllib.request.urlopen(self.management_url + path, context=context, timeout=10) as response:
            body: bytes = response.read()
            return body

    def root_pem(self) -> str:
        """Pebble's issuing root (it changes on every Pebble start)."""
        return self._get("/roots/0").decode("ascii")

    def intermediate_pem(self) -> str:
        return self._get("/intermediates/0").decode("ascii")

    def stop(self) -> None:
        self.pebble.stop()
        self.challtestsrv.stop()


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ServiceStartError(f"{name} is not installed; run `apt-get install pebble` (Debian package)")
    return path


def make_test_ca(directory: Path) -> tuple[Path, Path, Path]:
    """A CA plus a server certificate for 127.0.0.1/localhost; returns (ca, cert, key) paths."""
    material = write_test_ca(directory, ca_common_name="mhp test CA for pebble")
    return material.ca_path, material.cert_path, material.key_path


def start_pebble(workdir: Path, *, http_port: int | None = None) -> Pebble:
    if os.environ.get("PEBBLE_VA_ALWAYS_VALID"):
        raise ServiceStartError("PEBBLE_VA_ALWAYS_VALID is set: these tests need real HTTP-01 validation")
    pebble_bin, challtestsrv_bin = _binary("pebble"), _binary("pebble-challtestsrv")
    ca_path, cert_path, key_path = make_test_ca(workdir / "tls")
    host = "127.0.0.1"
    dns_port, dns_management_port = free_port(), free_port()
    acme_port, management_port, tls_port = free_port(), free_port(), free_port()
    http_port = http_port or free_port()

    challtestsrv = ServiceProcess(
        name=f"pebble-challtestsrv:{dns_port}",
        argv=[
            challtestsrv_bin,
            "-management",
            f"{host}:{dns_management_port}",
            "-dns01",
            f"{host}:{dns_port}",
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-defaultIPv4",
            host,
            "-defaultIPv6",
            "",
        ],
        log_path=workdir / "challtestsrv.log",
        ready=lambda: port_open(host, dns_management_port) and port_open(host, dns_port),
    ).start()

    config = {
        "pebble": {
            "listenAddress": f"{host}:{acme_port}",
            "managementListenAddress": f"{host}:{management_port}",
            "certificate": str(cert_path),
            "privateKey": str(key_path),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    config_path = workdir / "pebble-config.json"
    config_path.write_text(json.dumps(config, indent=2))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEBBLE_")}
    env.update(PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0")
    try:
        pebble = ServiceProcess(
            name=f"pebble:{acme_port}",
            argv=[pebble_bin, "-config", str(config_path), "-dnsserver", f"{host}:{dns_port}"],
            log_path=workdir / "pebble.log",
            ready=lambda: port_open(host, acme_port) and port_open(host, management_port),
            env=env,
            cwd=workdir,
        ).start()
    except ServiceStartError:
        challtestsrv.stop()
        raise
    return Pebble(
        directory_url=f"https://{host}:{acme_port}/dir",
        management_url=f"https://{host}:{management_port}",
        ca_bundle=ca_path,
        http_port=http_port,
        dns_port=dns_port,
        pebble=pebble,
        challtestsrv=challtestsrv,
    )


def pebble_version() -> str:
    out = subprocess.run(["dpkg-query", "-W", "pebble"], capture_output=True, text=True, check=False)
    return out.stdout.strip()
