"""The CLI's read-modify-write updates send the ETag of their read as If-Match, and a 412 is reported as one
clear line (against `python -m control_plane` as a real subprocess)."""

from __future__ import annotations

import httpx
import pytest

from control_plane.cli.client import ApiClient, ApiError, Endpoint

from .conftest import ADMIN, ADMIN_TOKEN, RunningControlPlane
from .test_cli import cp, ok, run  # noqa: F401  (cp is a fixture)

pytestmark = pytest.mark.slow


def test_a_write_based_on_a_stale_read_is_refused_with_a_clear_message(cp: RunningControlPlane) -> None:  # noqa: F811
    ok(run(cp, "route", "create", "/api", "--to-url", "http://127.0.0.1:9", "--id", "r-cli"))
    with ApiClient(Endpoint(url=cp.url, token=ADMIN_TOKEN)) as api:
        current, etag = api.read("/api/v1/routes/r-cli")
        assert etag is not None
        # Someone else changes the route between our read and our write.
        ok(run(cp, "route", "update", "r-cli", "--priority", "700"))
        body = {k: current[k] for k in ("path_pattern", "target_url")}
        with pytest.raises(ApiError) as refused:
            api.request("PUT", "/api/v1/routes/r-cli", {**body, "priority": 10}, if_match=etag)
    assert refused.value.status == 412
    assert "run the command again" in str(refused.value)
    route = httpx.get(cp.url + "/api/v1/routes/r-cli", headers=ADMIN).json()
    assert route["priority"] == 700


def test_cli_read_modify_write_updates_still_work(cp: RunningControlPlane) -> None:  # noqa: F811
    ok(run(cp, "route", "create", "/x", "--to-url", "http://127.0.0.1:9", "--id", "r-two"))
    ok(run(cp, "route", "update", "r-two", "--priority", "5"))
    assert httpx.get(cp.url + "/api/v1/routes/r-two", headers=ADMIN).json()["priority"] == 5
