"""A private dockerd for the tests: Debian's docker.io with its own data-root, exec-root and socket under a
short temp directory (unix socket paths are limited to about 100 characters), no bridge, no iptables, no
masquerading: containers run with network_mode host or none, so all test traffic stays on 127.0.0.1.

`Dockerd.restart()` stops and starts the same daemon (same state), as an operator's `systemctl restart
docker` would; `remove_all_containers()` is what a test's cleanup runs. Needs root (dockerd does).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .services import ServiceProcess, ServiceStartError

STOP_GRACE_SECONDS = 30.0


def _binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    if path is None:
        raise ServiceStartError(
            f"{name} is not installed; run `apt-get install docker.io busybox-static` (the tests start their "
            "own dockerd, as root)"
        )
    return path


def engine_request(
    socket_path: str, method: str, path: str, body: Any = None, timeout: float = 10.0
) -> tuple[int, bytes]:
    """One HTTP/1.0 request to the engine's unix socket, with an optional JSON body (readiness checks,
    cleanup, and what tests do behind the controller's back: no client library)."""
    payload = b"" if body is None else json.dumps(body).encode()
    head = f"{method} {path} HTTP/1.0\r\nHost: docker\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(socket_path)
        conn.sendall(head.encode() + b"\r\n" + payload)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body


def _answers(socket_path: str) -> bool:
    try:
        status, body = engine_request(socket_path, "GET", "/_ping", timeout=1.0)
    except OSError:
        return False
    return status == 200 and body.strip() == b"OK"


@dataclass
class Dockerd:
    root: Path
    service: ServiceProcess | None = field(default=None)

    @property
    def socket_path(self) -> str:
        return str(self.root / "run" / "docker.sock")

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self) -> Dockerd:
        (self.root / "run").mkdir(parents=True, exist_ok=True)
        argv = [
            _binary("dockerd"),
            "--data-root", str(self.root / "data"),
            "--exec-root", str(self.root / "exec"),
            "--host", self.url,
            "--pidfile", str(self.root / "run" / "docker.pid"),
            "--bridge=none",
            "--iptables=false",
            "--ip-masq=false",
            "--ip6tables=false",
            "--log-level=warn",
        ]  # fmt: skip
        self.service = ServiceProcess(
            name="dockerd",
            argv=argv,
            log_path=self.root / "dockerd.log",
            ready=lambda: _answers(self.socket_path),
            start_timeout_seconds=60.0,
        ).start()
        return self

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop(grace_seconds=STOP_GRACE_SECONDS)

    def restart(self) -> None:
        self.stop()
        self.start()

    def containers(self, **filters: list[str]) -> list[dict[str, Any]]:
        query = "/containers/json?all=1"
        if filters:
            from urllib.parse import quote

            query += "&filters=" + quote(json.dumps(filters))
        status, body = engine_request(self.socket_path, "GET", query)
        assert status == 200, body
        rows: list[dict[str, Any]] = json.loads(body)
        return rows

    def remove_all_containers(self) -> None:
        for row in self.containers():
            engine_request(self.socket_path, "DELETE", f"/containers/{row['Id']}?force=1&v=1", timeout=30.0)


def start_dockerd() -> Dockerd:
    # tempfile in /tmp, not pytest's tmp_path: the socket path must stay short.
    return Dockerd(Path(tempfile.mkdtemp(prefix="mhpd-", dir="/tmp"))).start()


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root) + "/"
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    return sorted(points, key=len, reverse=True)


def discard(daemon: Dockerd) -> None:
    """Stop the daemon (after removing its containers) and delete its state, including the mounts dockerd
    leaves behind (its network namespace file stays bind-mounted after it exits)."""
    try:
        process = daemon.service.process if daemon.service is not None else None
        if process is not None and process.poll() is None:
            daemon.remove_all_containers()
    finally:
        daemon.stop()
        for point in _mounts_under(daemon.root):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)
        shutil.rmtree(daemon.root, ignore_errors=True)
