"""`/api/v1/`: an index of the management API (the first URL `just up` prints), built from the OpenAPI
document so it lists exactly what the app serves. Public, like /openapi.json: it names endpoints, no data."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

router = APIRouter(tags=["index"])

_METHODS = ("get", "post", "put", "patch", "delete")
AUTHENTICATION = "Authorization: Bearer <ADMIN_TOKEN, an API token (acm_...), or an `mhp oauth login` token>"


@router.get("/api/v1/", summary="Index of the management API")
async def api_index(request: Request) -> dict[str, Any]:
    document = request.app.openapi()
    endpoints = []
    for path, item in document["paths"].items():
        if not path.startswith("/api/"):
            continue
        for method in _METHODS:
            if method in item:
                endpoints.append(
                    {"method": method.upper(), "path": path, "summary": item[method].get("summary", "")}
                )
    return {
        "name": document["info"]["title"],
        "version": document["info"]["version"],
        "docs": "/docs",
        "openapi": "/openapi.json",
        "authentication": AUTHENTICATION,
        "endpoints": endpoints,
    }
