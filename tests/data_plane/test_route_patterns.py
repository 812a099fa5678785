"""Regex routes run on RE2 (shared/route_pattern.py): a route one tenant adds cannot stall the data plane's
event loop for everyone else, and a stored pattern RE2 cannot run is skipped, never fatal to the table."""

from __future__ import annotations

import json
import socket

import pytest
import redis

from data_plane.sync.snapshot import compile_snapshot
from shared.models import ProxyTarget, Route
from tests.data_plane.backends import HttpBackend
from tests.data_plane.conftest import DataPlane
from tests.data_plane.helpers import configure, get, proxy_to

pytestmark = pytest.mark.proxy

# Python's `re` needs about 2**40 steps to fail this path against ^/(a+)+$: hours with the loop blocked.
CATASTROPHIC_PATH = b"/" + b"a" * 40 + b"!"


def test_a_catastrophic_regex_route_cannot_stall_other_tenants(
    data_plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    routed = HttpBackend()
    try:
        configure(
            redis_sync,
            data_plane,
            [proxy_to(http_backend.url, "tenant.test"), proxy_to(http_backend.url, "other.test")],
            [
                Route(
                    id="evil",
                    path_pattern=r"^/(a+)+$",
                    match="regex",
                    target_url=routed.url,
                    scope="proxies",
                    proxy_hostnames=["tenant.test"],
                )
            ],
        )
        with socket.create_connection(("127.0.0.1", data_plane.http_port), timeout=10) as attack:
            attack.sendall(b"GET " + CATASTROPHIC_PATH + b" HTTP/1.1\r\nHost: tenant.test\r\n\r\n")
            # Another tenant is served meanwhile (a stalled loop would leave this to the client's timeout)...
            assert get(data_plane, "/echo", host="other.test")[0] == 200
            # ...and the attack is answered too: no route matched, so the proxy's own upstream served it.
            assert attack.recv(65536).startswith(b"HTTP/1.1 200 ")
        status, _h, body = get(data_plane, "/" + "a" * 40, host="tenant.test")
        assert status == 200 and json.loads(body)["backend_port"] == routed.port  # the route still routes
    finally:
        routed.close()


def test_a_stored_pattern_re2_cannot_run_is_skipped() -> None:
    good = Route(id="good", path_pattern="^/ok$", match="regex", target_url="http://r:1")
    lookahead = good.model_dump() | {"id": "lookahead", "path_pattern": "^/(?=admin)"}
    table = compile_snapshot(
        3,
        {"h.test": ProxyTarget(hostname="h.test", target_url="http://b:1").model_dump_json()},
        {"good": good.model_dump_json(), "lookahead": Route.model_construct(**lookahead).model_dump_json()},
    )
    assert [r.id for r in table.exact["h.test"].routes] == ["good"]
