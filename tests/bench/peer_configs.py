"""Config files for the backend and the peer proxies, as text (no IO here).

Every peer gets the same job: listen on 127.0.0.1, route `Host: bench.local` to the backend over keep-alive
upstream connections, answer any other host with 404, add X-Forwarded-For, log nothing per request, use one
core. Settings differ from a peer's packaged defaults only where the default would measure something else than
proxying (nginx closes a connection after 1000 requests by default; we lift that on both sides, as Caddy and
HAProxy have no such limit). nginx keeps its default response buffering: that is how operators run it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BENCH_HOST = "bench.local"
# The rows wrk cannot drive (tests/bench/stream_peers.py): each has a host of its own, routed to its backend.
WS_HOST = "ws.bench.local"
SSE_HOST = "sse.bench.local"
# Ours only: the same small GET to a protected proxy, with a valid bearer token.
PROTECTED_HOST = "mcp.bench.local"


@dataclass(frozen=True, slots=True)
class StreamPorts:
    """Where the WebSocket echo and SSE backends listen (python programs, not the nginx backend)."""

    ws: int
    sse: int


@dataclass(frozen=True, slots=True)
class Payload:
    """One static file the backend serves; `name` is the size label used in tables and JSON."""

    name: str
    path: str
    size_bytes: int

    def content(self) -> bytes:
        if self.size_bytes == len(SMALL_BODY):
            return SMALL_BODY
        pattern = b"0123456789abcdef"
        return (pattern * (self.size_bytes // len(pattern) + 1))[: self.size_bytes]


@dataclass(frozen=True, slots=True)
class TlsListener:
    """A second, TLS-terminating listener on the same proxy, with the run's self-signed certificate."""

    port: int
    cert_path: Path
    key_path: Path
    combined_path: Path  # certificate then key in one file (HAProxy)


SMALL_BODY = b"Hello, world\n"  # 13 bytes: the classic small-GET
PAYLOADS: dict[str, Payload] = {
    "small": Payload("small", "/small.txt", len(SMALL_BODY)),
    "16k": Payload("16k", "/16k.bin", 16 * 1024),
    "1m": Payload("1m", "/1m.bin", 1024 * 1024),
}


def _nginx_common(workdir: Path, name: str) -> str:
    # All paths nginx would otherwise take from /etc or /var go into our temp dir.
    return f"""
worker_processes 1;
pid {workdir}/{name}.pid;
error_log {workdir}/{name}-error.log warn;
events {{ worker_connections 16384; }}
"""


def _nginx_temp_paths(workdir: Path, name: str) -> str:
    return "\n".join(
        f"  {kind}_temp_path {workdir}/{name}-{kind}-temp;"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )


def nginx_backend_config(workdir: Path, *, port: int, webroot: Path, status_port: int) -> str:
    # stub_status on its own port: connections accepted and requests served, read around each measured run
    # to show whether a proxy really reuses its upstream connections.
    return f"""{_nginx_common(workdir, "backend")}
http {{
  access_log off;
  default_type application/octet-stream;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_timeout 120s;
  keepalive_requests 100000000;
{_nginx_temp_paths(workdir, "backend")}
  server {{
    listen 127.0.0.1:{port} default_server backlog=4096;
    root {webroot};
    location / {{ }}
  }}
  server {{
    listen 127.0.0.1:{status_port};
    location / {{ stub_status; }}
  }}
}}
"""


@dataclass(frozen=True, slots=True)
class BackendCounters:
    accepted_connections: int
    requests: int


def parse_stub_status(text: str) -> BackendCounters:
    """nginx stub_status: 'Active connections: N' / 'server accepts handled requests' / ' A H R' / ..."""
    lines = text.splitlines()
    try:
        accepts, _handled, requests = (int(v) for v in lines[2].split())
    except (IndexError, ValueError) as exc:
        raise ValueError(f"not an nginx stub_status page: {text[:200]!r}") from exc
    return BackendCounters(accepts, requests)


def nginx_proxy_config(
    workdir: Path,
    *,
    port: int,
    backend_port: int,
    tls: TlsListener | None = None,
    streams: StreamPorts | None = None,
) -> str:
    tls_default = f"\n    listen 127.0.0.1:{tls.port} ssl default_server backlog=4096;" if tls else ""
    tls_bench = f"\n    listen 127.0.0.1:{tls.port} ssl;" if tls else ""
    certificate = (
        f"\n  ssl_certificate {tls.cert_path};\n  ssl_certificate_key {tls.key_path};" if tls else ""
    )
    return f"""{_nginx_common(workdir, "nginx-proxy")}
http {{
  access_log off;{certificate}
  default_type application/octet-stream;
  keepalive_timeout 120s;
  keepalive_requests 100000000;
{_nginx_temp_paths(workdir, "nginx-proxy")}
  upstream bench_backend {{
    server 127.0.0.1:{backend_port};
    keepalive 128;
    keepalive_requests 100000000;
    keepalive_timeout 120s;
  }}
  server {{
    listen 127.0.0.1:{port} default_server backlog=4096;{tls_default}
    location / {{ return 404 "unknown host $host\\n"; }}
  }}
  server {{
    listen 127.0.0.1:{port};{tls_bench}
    server_name {BENCH_HOST};
    location / {{
      proxy_pass http://bench_backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
    }}
  }}{_nginx_streams(port, streams)}
}}
"""


def _nginx_streams(port: int, streams: StreamPorts | None) -> str:
    if streams is None:
        return ""
    # WebSocket as nginx's documentation configures it; SSE with nginx's default response buffering.
    return f"""
  upstream sse_backend {{
    server 127.0.0.1:{streams.sse};
    keepalive 128;
  }}
  server {{
    listen 127.0.0.1:{port};
    server_name {WS_HOST};
    location / {{
      proxy_pass http://127.0.0.1:{streams.ws};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_read_timeout 120s;
    }}
  }}
  server {{
    listen 127.0.0.1:{port};
    server_name {SSE_HOST};
    location / {{
      proxy_pass http://sse_backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_read_timeout 120s;
    }}
  }}"""


def caddyfile(
    *, port: int, backend_port: int, tls: TlsListener | None = None, streams: StreamPorts | None = None
) -> str:
    # admin off: no admin listener on :2019 to collide with; auto_https off: no certificate management or
    # redirects, only the files we name. Caddy reuses upstream connections by default and adds
    # X-Forwarded-For itself. Tab-indented, as `caddy fmt` writes it (otherwise Caddy warns on every start).
    text = (
        "{\n\tadmin off\n\tauto_https off\n"
        f"\thttp_port {port}\n" + (f"\thttps_port {tls.port}\n" if tls else "") + "}\n\n"
        f"http://{BENCH_HOST}:{port} {{\n\treverse_proxy 127.0.0.1:{backend_port}\n}}\n\n"
        f'http://:{port} {{\n\trespond "unknown host {{host}}" 404\n}}\n'
    )
    if streams:
        # Caddy proxies WebSocket upgrades and flushes text/event-stream by itself.
        text += (
            f"\nhttp://{WS_HOST}:{port} {{\n\treverse_proxy 127.0.0.1:{streams.ws}\n}}\n"
            f"\nhttp://{SSE_HOST}:{port} {{\n\treverse_proxy 127.0.0.1:{streams.sse}\n}}\n"
        )
    if tls:
        # A host-less site so any SNI (wrk sends 127.0.0.1) gets the certificate; routing by Host as on HTTP.
        text += (
            f"\nhttps://:{tls.port} {{\n\ttls {tls.cert_path} {tls.key_path}\n"
            f"\t@bench host {BENCH_HOST}\n"
            f"\thandle @bench {{\n\t\treverse_proxy 127.0.0.1:{backend_port}\n\t}}\n"
            '\thandle {\n\t\trespond "unknown host {host}" 404\n\t}\n}\n'
        )
    return text


UNKNOWN_HOST_HAPROXY = '"unknown host %[req.hdr(host)]\\n"'


def haproxy_config(
    *,
    port: int,
    backend_port: int,
    tls: TlsListener | None = None,
    streams: StreamPorts | None = None,
    max_connections: int = 4096,
) -> str:
    tls_bind = f"\n  bind 127.0.0.1:{tls.port} ssl crt {tls.combined_path}" if tls else ""
    stream_acls = stream_backends = ""
    known = "!bench_host"
    if streams is not None:
        stream_acls = (
            f"\n  acl ws_host hdr(host),field(1,:) -i {WS_HOST}"
            f"\n  acl sse_host hdr(host),field(1,:) -i {SSE_HOST}"
        )
        known = "!bench_host !ws_host !sse_host"
        stream_backends = "\n  use_backend ws_backend if ws_host\n  use_backend sse_backend if sse_host"
    refuse = f"http-request return status 404 content-type text/plain lf-string {UNKNOWN_HOST_HAPROXY}"
    # http-reuse defaults to "safe" (idle upstream connections are shared between client connections).
    # WebSocket tunnels are HAProxy's own (after a 101 it relays bytes under `timeout tunnel`).
    return f"""global
  nbthread 1
  # haproxy reserves about 2 descriptors per connection: the open-files limit must allow twice this
  maxconn {max_connections}

defaults
  mode http
  option http-keep-alive
  option forwardfor
  timeout connect 5s
  timeout client 120s
  timeout server 120s
  timeout tunnel 120s
  timeout http-keep-alive 120s

frontend bench
  bind 127.0.0.1:{port}{tls_bind}
  acl bench_host hdr(host),field(1,:) -i {BENCH_HOST}{stream_acls}
  {refuse} if {known}{stream_backends}
  default_backend bench_backend

backend bench_backend
  server backend 127.0.0.1:{backend_port}
""" + (
        ""
        if streams is None
        else f"""
backend ws_backend
  server ws 127.0.0.1:{streams.ws}

backend sse_backend
  server sse 127.0.0.1:{streams.sse}
"""
    )
