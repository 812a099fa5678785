"""End to end through a real data-plane process to real backends: routing, headers, bodies, keep-alive."""

from __future__ import annotations

import hashlib
import http.client
import json

import pytest
import redis

from shared.models import Route
from tests.data_plane.backends import HttpBackend
from tests.data_plane.conftest import DataPlane
from tests.data_plane.helpers import configure, echo_headers, get, proxy_to
from tests.harness.services import free_port

pytestmark = pytest.mark.proxy


def test_forwarded_headers_and_hop_by_hop(
    data_plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    configure(redis_sync, data_plane, [proxy_to(http_backend.url)])
    status, headers, body = get(
        data_plane,
        "/echo?q=1",
        host="App.Test:80",
        headers={
            "Connection": "keep-alive, X-Drop-Me",
            "X-Drop-Me": "1",
            "Keep-Alive": "timeout=1",
            "X-Forwarded-For": "6.6.6.6",
            "TE": "trailers",
            "X-Keep": "yes",
        },
    )
    assert status == 200
    seen = echo_headers(body)
    assert json.loads(body)["target"] == "/echo?q=1"
    assert seen["host"] == ["App.Test:80"]  # preserve_host_header defaults to True
    # The test client is on 127.0.0.1, a trusted proxy by default: its X-Forwarded-For is kept, appended to.
    assert seen["x-forwarded-for"] == ["6.6.6.6, 127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["x-forwarded-host"] == ["App.Test:80"]
    assert len(seen["x-request-id"][0]) >= 16
    assert seen["x-keep"] == ["yes"]
    for hop in ("x-drop-me", "keep-alive", "te", "connection"):
        assert hop not in seen, hop
    assert headers["x-request-id"] == seen["x-request-id"][0]
    assert "keep-alive" not in headers  # the backend's hop-by-hop response header is dropped
    assert headers["x-backend"] == "echo"


def test_untrusted_peer_cannot_spoof_forwarded_headers(
    redis_sync: redis.Redis, redis_server: object, tmp_path: object, http_backend: HttpBackend
) -> None:
    from pathlib import Path

    from tests.data_plane.conftest import start_data_plane

    plane = start_data_plane(redis_server, Path(str(tmp_path)), {"TRUSTED_PROXY_CIDRS": "10.0.0.0/8"})  # type: ignore[arg-type]
    try:
        configure(redis_sync, plane, [proxy_to(http_backend.url)])
        _, _, body = get(
            plane,
            "/echo",
            headers={"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil"},
        )
        seen = echo_headers(body)
        assert seen["x-forwarded-for"] == ["127.0.0.1"]
        assert seen["x-forwarded-proto"] == ["http"]
        assert seen["x-forwarded-host"] == ["app.test"]
    finally:
        plane.service.stop()


def test_host_rewrite_and_header_set_remove(
    data_plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    configure(
        redis_sync,
        data_plane,
        [
            proxy_to(
                http_backend.url,
                preserve_host_header=False,
                request_headers_set={"X-Added": "a", "X-Replace": "new"},
                request_headers_remove=["X-Secret"],
                response_headers_set={"X-Frame-Options": "DENY"},
                response_headers_remove=["X-Secret-Backend"],
            )
        ],
    )
    status, headers, body = get(data_plane, "/echo", headers={"X-Secret": "s", "X-Replace": "old"})
    assert status == 200
    seen = echo_headers(body)
    assert seen["host"] == [f"127.0.0.1:{http_backend.port}"]
    assert seen["x-added"] == ["a"] and seen["x-replace"] == ["new"]
    assert "x-secret" not in seen
    assert headers["x-frame-options"] == "DENY"
    assert "x-secret-backend" not in headers


def test_request_bodies_content_length_and_chunked(
    data_plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    configure(redis_sync, data_plane, [proxy_to(http_backend.url)])
    payload = bytes(range(256)) * 4096  # 1 MiB
    status, _, body = get(data_plane, "/echo", method="POST", body=payload)
    assert status == 200 and json.loads(body)["body_length"] == len(payload)

    def chunks() -> object:
        for i in range(0, len(payload), 70000):
            yield payload[i : i + 70000]

    conn = http.client.HTTPConnection("127.0.0.1", data_plane.http_port, timeout=10)
    conn.request("PUT", "/echo", body=chunks(), headers={"Host": "app.test"}, encode_chunked=True)
    response = conn.getresponse()
    echoed = json.loads(response.read())
    assert echoed["body_length"] == len(payload)
    assert echoed["body"].encode("latin-1") == payload
    assert ("transfer-encoding", "chunked") in [tuple(h) for h in echoed["headers"]]


@pytest.mark.parametrize("chunked", ["0", "1"])
def test_large_response_streams_intact(
    data_plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend, chunked: str
) -> None:
    configure(redis_sync, data_plane, [proxy_to(http_backend.url)])
    size = 20 * 1024 * 1024 + 7
    status, headers, body = get(data_plane, f"/bytes?n={size}&chunked={chunked}")
    assert status == 200
    assert len(body) == size and hashlib.sha256(body).digest() == hashlib.sha256(b"x" * size).digest()
    if chunked == "0":
        assert headers["content-length"] == str(size)


def test_head_and_status_passthrough(
    data_plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    configure(redis_sync, data_plane, [proxy_to(http_backend.url)])
    assert get(data_plane, "/status/418")[0] == 418
    assert get(data_plane, "/status/204")[0] == 204
    status, headers, body = get(data_plane, "/bytes?n=100", method="HEAD")
    assert status == 200 and body == b"" and headers["content-length"] == "100"


def test_keepalive_pool_reuses_upstream_connection(
    data_plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    configure(redis_sync, data_plane, [proxy_to(http_backend.url)])
    conn = http.client.HTTPConnection("127.0.0.1", data_plane.http_port, timeout=10)
    for _ in range(5):
        conn.request("GET", "/echo", headers={"Host": "app.test"})
        assert conn.getresponse().read()
    conn.close()
    for _ in range(3):
        assert get(data_plane, "/echo")[0] == 200
    assert len(http_backend.requests) == 8
    assert http_backend.connections_accepted == 1


def test_stale_pooled_connection_is_retried_once_for_idempotent(
    data_plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    configure(redis_sync, data_plane, [proxy_to(http_backend.url)])
    assert get(data_plane, "/echo")[0] == 200
    http_backend.close_idle_connections()
    status, _, _ = get(data_plane, "/echo")
    assert status == 200
    assert http_backend.connections_accepted == 2


def test_routing_wildcards_disabled_and_routes(data_plane: DataPlane, redis_sync: redis.Redis) -> None:
    backends = [HttpBackend() for _ in range(3)]
    try:
        main, other, api = backends
        configure(
            redis_sync,
            data_plane,
            [
                proxy_to(main.url, "*.example.test"),
                proxy_to(other.url, "exact.example.test"),
                proxy_to(main.url, "off.test", enabled=False),
            ],
            [
                Route(id="api", path_pattern="/api/", target_url=api.url, priority=900, methods=["GET"]),
                Route(
                    id="to-exact", path_pattern=r"^/x/\d+$", match="regex", target_proxy="exact.example.test"
                ),
            ],
        )

        def port_of(host: str, path: str = "/echo", method: str = "GET") -> int:
            status, _, body = get(data_plane, path, host=host, method=method)
            assert status == 200, (host, path, status, body)
            return int(json.loads(body)["backend_port"])

        assert port_of("a.example.test") == main.port
        assert port_of("a.b.example.test") == main.port
        assert port_of("exact.example.test") == other.port
        assert port_of("a.example.test", "/api/echo") == api.port
        assert port_of("a.example.test", "/api/echo", "POST") == main.port
        assert port_of("a.example.test", "/x/12") == other.port
        status, _, body = get(data_plane, "/", host="example.test")
        assert status == 404 and b"example.test" in body
        status, _, body = get(data_plane, "/", host="off.test")
        assert status == 503
    finally:
        for backend in backends:
            backend.close()


def test_upstream_refused_is_502_and_timeout_is_504(
    data_plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    configure(
        redis_sync,
        data_plane,
        [
            proxy_to(f"http://127.0.0.1:{free_port()}", "dead.test"),
            proxy_to(http_backend.url, "slow.test", read_timeout_seconds=0.3),
        ],
    )
    status, _, body = get(data_plane, "/", host="dead.test")
    assert status == 502 and b"refused" in body
    status, _, body = get(data_plane, "/slow?seconds=3", host="slow.test")
    assert status == 504
    status, _, _ = get(data_plane, "/hangup", host="slow.test")
    assert status == 502


def test_request_body_limit_413(
    data_plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    configure(redis_sync, data_plane, [proxy_to(http_backend.url, max_request_body_bytes=1000)])
    status, _, _ = get(data_plane, "/echo", method="POST", body=b"a" * 1000)
    assert status == 200
    status, headers, _ = get(data_plane, "/echo", method="POST", body=b"a" * 1001)
    assert status == 413 and headers.get("connection") == "close"
    conn = http.client.HTTPConnection("127.0.0.1", data_plane.http_port, timeout=10)
    conn.request(
        "POST",
        "/echo",
        body=iter([b"a" * 600, b"b" * 600]),
        headers={"Host": "app.test"},
        encode_chunked=True,
    )
    assert conn.getresponse().status == 413
    assert len(http_backend.requests) == 1


def test_every_request_is_logged_without_secrets(
    data_plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    import time

    from shared import keys

    configure(
        redis_sync,
        data_plane,
        [proxy_to(http_backend.url)],
        [Route(id="logged-route", path_pattern="/echo", target_url=http_backend.url)],
    )
    status, headers, _ = get(
        data_plane,
        "/echo?access_token=s3cr3t-value&page=2",
        method="POST",
        body=b"12345",
        headers={"Authorization": "Bearer very-secret", "Cookie": "session=also-secret"},
    )
    assert status == 200
    assert get(data_plane, "/", host="nowhere.test")[0] == 404
    deadline = time.monotonic() + 5
    entries: list[dict[str, str]] = []
    while len(entries) < 2:
        assert time.monotonic() < deadline, entries
        time.sleep(0.05)
        entries = [fields for _, fields in redis_sync.xrange(keys.request_log_stream())]
    proxied = next(e for e in entries if e["host"] == "app.test")
    assert proxied["method"] == "POST" and proxied["status"] == "200"
    assert proxied["route_id"] == "logged-route"
    assert proxied["upstream"] == http_backend.url
    assert proxied["request_id"] == headers["x-request-id"]
    assert proxied["bytes_in"] == "5" and int(proxied["bytes_out"]) > 0
    assert proxied["client_ip"] == "127.0.0.1"
    assert proxied["path"].startswith("/echo?")
    missing = next(e for e in entries if e["host"] == "nowhere.test")
    assert missing["status"] == "404"
    dump = json.dumps(entries)
    for secret in ("s3cr3t-value", "very-secret", "also-secret"):
        assert secret not in dump


def test_client_leaving_before_the_response_cancels_the_upstream_request(
    data_plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    import socket
    import time

    configure(redis_sync, data_plane, [proxy_to(http_backend.url)])
    sock = socket.create_connection(("127.0.0.1", data_plane.http_port), timeout=5)
    sock.sendall(b"GET /slow?seconds=2 HTTP/1.1\r\nHost: app.test\r\n\r\n")
    deadline = time.monotonic() + 5
    while not http_backend.requests:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    sock.close()
    while http_backend.open_connections:
        assert time.monotonic() < deadline, "upstream request kept after the client left"
        time.sleep(0.02)
    # No retry on a fresh connection for a client that is gone.
    time.sleep(0.2)
    assert len(http_backend.requests) == 1 and http_backend.connections_accepted == 1


def test_upstream_early_answer_during_upload_is_relayed(
    data_plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    configure(redis_sync, data_plane, [proxy_to(http_backend.url)])
    conn = http.client.HTTPConnection("127.0.0.1", data_plane.http_port, timeout=10)
    try:
        conn.request("POST", "/reject", body=b"z" * (32 * 1024 * 1024), headers={"Host": "app.test"})
    except (BrokenPipeError, ConnectionResetError):
        pass  # the proxy may stop reading our upload once the answer is known
    response = conn.getresponse()
    assert response.status == 413
    assert response.read() == b"too big\n"


def test_upstream_connect_timeout_is_504(data_plane: DataPlane, redis_sync: redis.Redis) -> None:
    import socket

    # A listener whose accept queue is full and never drained: the kernel drops further SYNs, so a connect
    # to it hangs, which is what an unreachable upstream looks like.
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(0)
    port = blackhole.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        configure(
            redis_sync,
            data_plane,
            [proxy_to(f"http://127.0.0.1:{port}", "hole.test", connect_timeout_seconds=0.3)],
        )
        status, _, body = get(data_plane, "/", host="hole.test")
        assert status == 504 and b"connect timed out" in body
    finally:
        for filler in fillers:
            filler.close()
        blackhole.close()


def _request_ids(plane: DataPlane, count: int) -> list[bytes]:
    """X-Request-Id of `count` requests, each on a connection of its own, answered by the data plane itself
    (unknown host: no backend in the loop)."""
    import socket

    ids = []
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", plane.http_port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: nowhere.test\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head = answer.split(b"\r\n\r\n", 1)[0].lower()
        assert head.startswith(b"http/1.1 404 ")
        lines = head.split(b"\r\n")
        (value,) = [line.split(b":", 1)[1].strip() for line in lines if line.startswith(b"x-request-id:")]
        ids.append(value)
    return ids


def test_request_ids_are_unique_across_connections_and_replicas(
    data_plane: DataPlane, redis_sync: redis.Redis, redis_server: object, tmp_path: object
) -> None:
    """X-Request-Id names one request in the logs of every replica: 1,000 requests, each on its own
    connection (so connection objects, and their addresses, are recycled between them), get 1,000 different
    ids, none of which another replica hands out."""
    from pathlib import Path

    from tests.data_plane.conftest import start_data_plane

    ids = _request_ids(data_plane, 1000)
    assert len(set(ids)) == 1000
    replica = start_data_plane(redis_server, Path(str(tmp_path)) / "replica")  # type: ignore[arg-type]
    try:
        assert not set(ids) & set(_request_ids(replica, 100))
    finally:
        replica.service.stop()
