"""Start real service processes on loopback with random ports, and stop them by PID.

`ServiceProcess` runs a command in its own process group, captures its output to a log file (shown when a
test fails to start it), waits until a readiness check passes, and on stop sends SIGTERM to the group, then
SIGKILL after a grace period. Redis now; Pebble, dockerd and Chromium use the same helper.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class ServiceStartError(RuntimeError):
    pass


# Ports this test process has handed out. The kernel may return a port again as soon as the probing socket
# closes, so two free_port() calls for one service set (API and PROXY port, say) could collide; seen in CI.
_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A currently free TCP port on `host` that this process has not handed out before."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(1000):
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise ServiceStartError("no unused free port found after 1000 tries")


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class ServiceProcess:
    name: str
    argv: Sequence[str]
    log_path: Path
    ready: Callable[[], bool]
    env: dict[str, str] | None = None
    cwd: Path | None = None
    start_timeout_seconds: float = 20.0
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> ServiceProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # the child owns the file for its lifetime
        self.process = subprocess.Popen(
            list(self.argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + self.start_timeout_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServiceStartError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            if self.ready():
                return self
            time.sleep(0.05)
        self.stop()
        raise ServiceStartError(
            f"{self.name} not ready after {self.start_timeout_seconds}s:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def signal(self, signum: int) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signum)

    def stop(self, grace_seconds: float = 5.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)


@dataclass
class RedisServer:
    host: str
    port: int
    password: str
    service: ServiceProcess

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"


def redis_server_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise ServiceStartError(
            "redis-server is not installed; run `just test` (installs it as root) "
            "or `apt-get install redis-server`"
        )
    return path


def start_redis(workdir: Path, *, port: int | None = None, password: str | None = None) -> RedisServer:
    host = "127.0.0.1"
    port = port or free_port(host)
    password = password or secrets.token_urlsafe(24)
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [
        redis_server_binary(),
        "--bind",
        host,
        "--port",
        str(port),
        "--requirepass",
        password,
        "--dir",
        str(workdir),
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "yes",
        "--daemonize",
        "no",
    ]
    service = ServiceProcess(
        name=f"redis-server:{port}",
        argv=argv,
        log_path=workdir / "redis.log",
        ready=lambda: port_open(host, port),
    )
    service.start()
    return RedisServer(host=host, port=port, password=password, service=service)
