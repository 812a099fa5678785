"""Start the backend and each proxy under test as pinned foreground children, and check they answer right.

Every process runs in its own process group (tests.harness.services.ServiceProcess) with a config generated
into the run's temp dir, and is stopped by PID. Core plan on a 2-core machine: each proxy alone on core 1;
wrk, the backend nginx (and Redis for our data plane) share core 0. A target counts as usable only after a
real GET through it returns the exact payload bytes, so a misrouted peer can never post a fast number.
"""

from __future__ import annotations

import http.client
import os
import resource
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.bench.peer_configs import (
    BENCH_HOST,
    PAYLOADS,
    BackendCounters,
    Payload,
    StreamPorts,
    TlsListener,
    caddyfile,
    haproxy_config,
    nginx_backend_config,
    nginx_proxy_config,
    parse_stub_status,
)
from tests.bench.tls_material import TlsFiles
from tests.harness.services import ServiceProcess, free_port, port_open

HOST = "127.0.0.1"


class TargetBroken(RuntimeError):
    """A target started but does not serve the payloads correctly."""


@dataclass(frozen=True, slots=True)
class CorePlan:
    proxy_core: int | None
    load_core: int | None

    @property
    def note(self) -> str:
        if self.proxy_core is None:
            return "fewer than 2 usable cores: nothing pinned, proxy and load generator compete for CPU"
        return (
            f"proxy under test alone on core {self.proxy_core}; wrk (1 thread), the backend nginx and "
            f"Redis share core {self.load_core}"
        )


def plan_cores() -> CorePlan:
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return CorePlan(proxy_core=None, load_core=None)
    return CorePlan(proxy_core=cores[1], load_core=cores[0])


def pinned(argv: list[str], core: int | None) -> list[str]:
    return argv if core is None else ["taskset", "-c", str(core), *argv]


@dataclass
class Target:
    name: str
    port: int
    tls_port: int | None = None
    status_port: int | None = None  # the backend's stub_status listener
    services: list[ServiceProcess] = field(default_factory=list)
    # the process whose group's CPU time we account to this target (None for DIRECT: that is the backend)
    measured: ServiceProcess | None = None
    # ours only: a valid access token for its protected proxy (the `protected` workload)
    bearer_token: str | None = None

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _started(target: Target, service: ServiceProcess) -> Target:
    # Registered before start() so a half-started service is still stopped by the caller's cleanup.
    target.services.append(service)
    service.start()
    return target


def write_payloads(webroot: Path, payloads: list[Payload]) -> None:
    webroot.mkdir(parents=True, exist_ok=True)
    webroot.chmod(0o755)
    for payload in payloads:
        path = webroot / payload.path.lstrip("/")
        path.write_bytes(payload.content())
        path.chmod(0o644)


def tls_listener(tls: TlsFiles | None) -> TlsListener | None:
    if tls is None:
        return None
    return TlsListener(free_port(HOST), tls.cert_path, tls.key_path, tls.combined_path)


def _ports_open(port: int, listener: TlsListener | None) -> bool:
    return port_open(HOST, port) and (listener is None or port_open(HOST, listener.port))


def start_backend(workdir: Path, plan: CorePlan, webroot: Path) -> Target:
    port, status_port = free_port(HOST), free_port(HOST)
    config = _write(
        workdir / "backend-nginx.conf",
        nginx_backend_config(workdir, port=port, webroot=webroot, status_port=status_port),
    )
    service = ServiceProcess(
        name="backend nginx",
        argv=pinned(["nginx", "-c", str(config), "-g", "daemon off;"], plan.load_core),
        log_path=workdir / "backend-nginx.out",
        ready=lambda: port_open(HOST, port) and port_open(HOST, status_port),
    )
    return _started(Target("direct", port, status_port=status_port), service)


def backend_counters(backend: Target) -> BackendCounters:
    """The backend's totals, minus the connection and request this very read adds."""
    assert backend.status_port is not None
    try:
        status, body = fetch(backend.status_port, "/", host="status")
    except (OSError, http.client.HTTPException) as exc:
        raise TargetBroken(f"backend stub_status unreachable: {type(exc).__name__}: {exc}") from exc
    if status != 200:
        raise TargetBroken(f"backend stub_status answered {status}")
    counters = parse_stub_status(body.decode("ascii", "replace"))
    return BackendCounters(counters.accepted_connections - 1, counters.requests - 1)


def start_nginx_proxy(
    workdir: Path, plan: CorePlan, backend_port: int, tls: TlsFiles | None, streams: StreamPorts | None = None
) -> Target:
    port, listener = free_port(HOST), tls_listener(tls)
    config = _write(
        workdir / "nginx-proxy.conf",
        nginx_proxy_config(workdir, port=port, backend_port=backend_port, tls=listener, streams=streams),
    )
    service = ServiceProcess(
        name="nginx proxy",
        argv=pinned(["nginx", "-c", str(config), "-g", "daemon off;"], plan.proxy_core),
        log_path=workdir / "nginx-proxy.out",
        ready=lambda: _ports_open(port, listener),
    )
    target = Target("nginx", port, listener.port if listener else None, measured=service)
    return _started(target, service)


def start_caddy(
    workdir: Path, plan: CorePlan, backend_port: int, tls: TlsFiles | None, streams: StreamPorts | None = None
) -> Target:
    port, listener = free_port(HOST), tls_listener(tls)
    config = _write(
        workdir / "Caddyfile", caddyfile(port=port, backend_port=backend_port, tls=listener, streams=streams)
    )
    home = workdir / "caddy-home"
    home.mkdir(exist_ok=True)
    env = {
        **os.environ,
        # Caddy stores state under $HOME/XDG dirs; keep it in the run's temp dir.
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "GOMAXPROCS": "1",
    }
    service = ServiceProcess(
        name="caddy",
        argv=pinned(["caddy", "run", "--config", str(config), "--adapter", "caddyfile"], plan.proxy_core),
        log_path=workdir / "caddy.out",
        ready=lambda: _ports_open(port, listener),
        env=env,
    )
    target = Target("caddy", port, listener.port if listener else None, measured=service)
    return _started(target, service)


def start_haproxy(
    workdir: Path, plan: CorePlan, backend_port: int, tls: TlsFiles | None, streams: StreamPorts | None = None
) -> Target:
    port, listener = free_port(HOST), tls_listener(tls)
    # Room for the idle-connection row (10,000 clients) as far as the open-files limit allows (run.py raises
    # it where it can): haproxy reserves two descriptors per connection and refuses a maxconn beyond that.
    soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    max_connections = max(4096, min(16_000, (soft_limit - 200) // 2))
    config = _write(
        workdir / "haproxy.cfg",
        haproxy_config(
            port=port,
            backend_port=backend_port,
            tls=listener,
            streams=streams,
            max_connections=max_connections,
        ),
    )
    service = ServiceProcess(
        name="haproxy",
        argv=pinned(["haproxy", "-f", str(config), "-db"], plan.proxy_core),
        log_path=workdir / "haproxy.out",
        ready=lambda: _ports_open(port, listener),
    )
    target = Target("haproxy", port, listener.port if listener else None, measured=service)
    return _started(target, service)


def pin_running(pid: int, core: int | None) -> None:
    if core is not None:
        subprocess.run(["taskset", "-pc", str(core), str(pid)], capture_output=True, check=True)


def fetch(
    port: int,
    path: str,
    host: str = BENCH_HOST,
    *,
    tls_context: ssl.SSLContext | None = None,
    server_name: str | None = None,
    timeout_seconds: float = 5.0,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """GET `path` with `Host: host` from 127.0.0.1:`port`; over TLS with `tls_context`, sending `server_name`
    as SNI (and checking the certificate against it) when given, else none (the address is checked)."""
    connection: http.client.HTTPConnection
    if tls_context is None:
        connection = http.client.HTTPConnection(HOST, port, timeout=timeout_seconds)
    else:
        connection = http.client.HTTPSConnection(HOST, port, timeout=timeout_seconds, context=tls_context)
    try:
        if tls_context is not None and server_name is not None:
            # Connect by hand: HTTPSConnection names the server by the address it dials.
            raw = socket.create_connection((HOST, port), timeout=timeout_seconds)
            try:
                connection.sock = tls_context.wrap_socket(raw, server_hostname=server_name)
            except BaseException:
                raw.close()
                raise
        connection.request("GET", path, headers={"Host": host, **(headers or {})})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _check(
    target: Target,
    port: int,
    payload: Payload,
    tls_context: ssl.SSLContext | None,
    deadline: float,
    server_name: str | None = None,
) -> None:
    expected = payload.content()
    scheme = "https" if tls_context else "http"
    while True:
        try:
            status, body = fetch(port, payload.path, tls_context=tls_context, server_name=server_name)
            problem = None if (status, body) == (200, expected) else f"status {status}, {len(body)} bytes"
        except (OSError, http.client.HTTPException) as exc:  # ssl.SSLError is an OSError
            problem = f"{type(exc).__name__}: {exc}"
        if problem is None:
            return
        if time.monotonic() >= deadline:
            raise TargetBroken(
                f"GET {scheme}://127.0.0.1:{port}{payload.path} (Host: {BENCH_HOST}"
                + (f", SNI {server_name}" if server_name else "")
                + f") via {target.name}: "
                f"{problem}; expected 200 with {payload.size_bytes} bytes"
            )
        time.sleep(0.1)


def verify(
    target: Target, payloads: list[Payload], *, tls_cafile: Path | None = None, wait_seconds: float = 0.0
) -> dict[str, object]:
    """Check every payload comes back byte-exact through the target (and the small one over TLS when the
    target has a TLS listener: with no SNI, as wrk's "127.0.0.1" finds no name either, and with SNI
    bench.local, each time verifying the run's certificate); return what an unknown host gets."""
    deadline = time.monotonic() + wait_seconds
    for payload in payloads:
        _check(target, target.port, payload, None, deadline)
    if target.tls_port is not None and tls_cafile is not None:
        # The run's self-signed certificate is the only trust anchor: a handshake verifies only when the
        # target serves exactly that certificate. Its SAN holds both 127.0.0.1 and bench.local.
        context = ssl.create_default_context(cafile=str(tls_cafile))
        _check(target, target.tls_port, PAYLOADS["small"], context, deadline)
        _check(target, target.tls_port, PAYLOADS["small"], context, deadline, server_name=BENCH_HOST)
    try:
        unknown_status, _ = fetch(target.port, "/", host="unknown.invalid")
    except (OSError, http.client.HTTPException) as exc:
        return {"unknown_host_status": None, "unknown_host_error": f"{type(exc).__name__}: {exc}"}
    return {"unknown_host_status": unknown_status}
