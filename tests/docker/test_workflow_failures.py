"""A service whose attempt the engine refused is a failed item of the `services` workflow, and retrying it
there is a new attempt: once the missing image exists, the retry runs the service. Real control plane, real
dockerd (tests/docker/conftest.py)."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.control_plane.conftest import ADMIN
from tests.harness.dockerd import Dockerd, engine_request

from .conftest import httpd_service, wait_for_state

pytestmark = [pytest.mark.docker, pytest.mark.slow]

WORKFLOWS = "/api/v1/workflows/"


async def failed_items(http: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await http.get(WORKFLOWS, headers=ADMIN)
    assert response.status_code == 200, response.text
    services = next(view for view in response.json() if view["workflow"] == "services")
    return {item["item"]: item for item in services["failed"]}


async def test_a_refused_service_is_shown_failed_and_a_retry_runs_it_once_the_image_exists(
    http: httpx.AsyncClient, dockerd: Dockerd, busybox_image: str
) -> None:
    tag = f"later-{secrets.token_hex(4)}"
    later = f"mhp-test/busybox:{tag}"
    created = await http.post(
        "/api/v1/services/", json=httpd_service("late", later, pull="never"), headers=ADMIN
    )
    assert created.status_code == 201, created.text
    await wait_for_state(http, "late", "failed")
    failed = (await failed_items(http))["service:late"]
    assert failed["kind"] == "service" and f"No such image: {later}" in failed["error"]
    # Not an event: dropping it is refused (deleting the service is how to stop it).
    assert (await http.delete(f"{WORKFLOWS}services/service:late", headers=ADMIN)).status_code == 409

    status, body = engine_request(
        dockerd.socket_path,
        "POST",
        f"/images/{quote(busybox_image, safe='')}/tag?repo=mhp-test/busybox&tag={tag}",
    )
    assert status == 201, body
    try:
        retried = await http.post(f"{WORKFLOWS}services/service:late/retry", headers=ADMIN)
        assert retried.status_code == 200, retried.text
        await wait_for_state(http, "late", "running")
        assert "service:late" not in await failed_items(http)
        # Only failed services can be retried there.
        assert (await http.post(f"{WORKFLOWS}services/service:late/retry", headers=ADMIN)).status_code == 404
    finally:
        engine_request(dockerd.socket_path, "DELETE", f"/images/{quote(later, safe='')}?noprune=1")
