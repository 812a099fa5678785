"""`GET /health`: 200 when Redis answers a PING, 503 with the reason when it does not. No auth."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from .deps import RuntimeDep

router = APIRouter(tags=["health"])

REDIS_PING_TIMEOUT_SECONDS = 2.0


@router.get("/health")
async def health(runtime: RuntimeDep) -> JSONResponse:
    try:
        async with asyncio.timeout(REDIS_PING_TIMEOUT_SECONDS):
            await runtime.store.ping()
            version = await runtime.store.reader.config_version()
    except (RedisError, OSError, TimeoutError) as exc:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return JSONResponse(
            {"status": "unavailable", "redis": "unreachable", "reason": reason}, status_code=503
        )
    return JSONResponse({"status": "ok", "redis": "ok", "config_version": version})
