"""The first URLs a new user opens: `/api/v1/` is an index of the API, and `/docs` works offline (Swagger UI
from the vendored assets, nothing from a CDN), against a real `python -m control_plane`."""

from __future__ import annotations

import re

import httpx

from .conftest import RunningControlPlane


async def test_the_api_root_is_an_index_of_every_operation(
    running_control_plane: RunningControlPlane,
) -> None:
    async with httpx.AsyncClient(base_url=running_control_plane.url) as http:
        index = await http.get("/api/v1/")
        assert index.status_code == 200
        body = index.json()
        assert body["docs"] == "/docs" and body["openapi"] == "/openapi.json"
        listed = {(e["method"], e["path"]) for e in body["endpoints"]}
        document = (await http.get("/openapi.json")).json()
        served = {
            (method.upper(), path)
            for path, item in document["paths"].items()
            if path.startswith("/api/")
            for method in item
        }
        assert listed == served
        assert ("POST", "/api/v1/proxy/targets/") in listed


async def test_docs_load_nothing_from_outside(running_control_plane: RunningControlPlane) -> None:
    async with httpx.AsyncClient(base_url=running_control_plane.url) as http:
        page = await http.get("/docs")
        assert page.status_code == 200
        assert not re.search(r"https?://", page.text), "the docs page must not load anything from a CDN"
        assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
        assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
        assert any(a.endswith("swagger-ui.css") for a in assets)
        for asset in assets:
            response = await http.get(asset)
            assert response.status_code == 200, asset
            assert len(response.content) > 100, asset
        assert (
            "javascript"
            in (await http.get(next(a for a in assets if a.endswith(".js")))).headers["content-type"]
        )
        assert (await http.get("/redoc")).status_code == 404  # ReDoc would need a CDN
        assert (await http.get("/docs/oauth2-redirect")).status_code == 200
