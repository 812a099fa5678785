"""`/health`, OpenAPI docs, and the real `python -m control_plane` process."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from control_plane.app import create_app
from deploy.local.processes import pid_alive
from shared.config import Settings
from tests.harness.services import RedisServer, free_port, port_open

from .conftest import RunningControlPlane, control_plane_env, start_control_plane


async def test_health_reports_redis_ok(api: httpx.AsyncClient) -> None:
    response = await api.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["redis"] == "ok"
    assert body["config_version"] == 0


async def test_health_is_503_with_reason_when_redis_is_unreachable(settings: Settings) -> None:
    closed_port = free_port()  # bound and released: nothing listens there
    broken = settings.model_copy(update={"REDIS_URL": f"redis://127.0.0.1:{closed_port}/0"})
    app = create_app(broken)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cp") as client:
            response = await client.get("/health")
            assert response.status_code == 503
            body = response.json()
            assert body["redis"] == "unreachable"
            assert "Connection" in body["reason"] or "refused" in body["reason"].lower()
            # An API call that needs Redis fails cleanly with 503 too, not a crash or a 500.
            listing = await client.get(
                "/api/v1/proxy/targets/", headers={"Authorization": "Bearer acm_not-the-admin"}
            )
            assert listing.status_code == 503
            assert "Redis is unavailable" in listing.json()["detail"]


async def test_openapi_and_docs_are_served(api: httpx.AsyncClient) -> None:
    docs = await api.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
    schema = (await api.get("/openapi.json")).json()
    for path in ("/api/v1/tokens/", "/api/v1/proxy/targets/", "/api/v1/routes/", "/health"):
        assert path in schema["paths"]
    # The docs offer the bearer scheme, so "Authorize" works in /docs.
    assert any(
        scheme.get("scheme") == "bearer" for scheme in schema["components"]["securitySchemes"].values()
    )


@pytest.mark.slow
def test_real_process_serves_health_over_tcp(running_control_plane: RunningControlPlane) -> None:
    response = httpx.get(f"{running_control_plane.url}/health", timeout=5)
    assert response.status_code == 200
    assert response.json()["redis"] == "ok"
    assert running_control_plane.service.process is not None
    assert running_control_plane.service.process.poll() is None


@pytest.mark.slow
def test_real_process_stops_cleanly_on_sigterm(redis_server: RedisServer, tmp_path: Path) -> None:
    port = free_port()
    service = start_control_plane(control_plane_env(redis_server, port), port, tmp_path)
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
        service.signal(signal.SIGTERM)
        assert service.process is not None
        # uvicorn shuts down gracefully, then re-raises the signal it caught (exit status -SIGTERM) by design.
        assert service.process.wait(timeout=10) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in service.log_path.read_text()
        assert not pid_alive(service.pid)
        assert not port_open("127.0.0.1", port)
    finally:
        service.stop()
