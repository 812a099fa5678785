"""`/api/v1/workflows/`: the Redis-Streams workflows (ACME issuance, the service controller) with their
pending, in-flight, failed and dead-lettered items, and retry or drop of one item. Admin only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from ..services.workflows import DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT, WorkflowAction, WorkflowView
from .deps import PrincipalDep, RuntimeDep

router = APIRouter(prefix="/api/v1/workflows", tags=["workflows"])

WorkflowPath = Annotated[str, Path(max_length=40, description="acme or services")]
ItemPath = Annotated[
    str,
    Path(
        max_length=300,
        description="a stream id (1733380000000-0), dead:<id>, certificate:<name> or service:<name>",
    ),
]


@router.get("/", response_model=list[WorkflowView])
async def list_workflows(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT, description="items per list")] = DEFAULT_LIST_LIMIT,
) -> list[WorkflowView]:
    """Every workflow: consumers (replicas), counts, and its pending, in-flight, failed and dead items."""
    return await runtime.workflows.list(principal, limit=limit)


@router.post("/{workflow}/{item}/retry", response_model=WorkflowAction)
async def retry_item(
    workflow: WorkflowPath, item: ItemPath, runtime: RuntimeDep, principal: PrincipalDep
) -> WorkflowAction:
    """Queue the item again as a new event (a failed certificate: renew now; a failed service: restart)."""
    return await runtime.workflows.retry(principal, workflow, item)


@router.delete("/{workflow}/{item}", response_model=WorkflowAction)
async def drop_item(
    workflow: WorkflowPath, item: ItemPath, runtime: RuntimeDep, principal: PrincipalDep
) -> WorkflowAction:
    """Remove a queued, in-flight, failed or dead-lettered event for good."""
    return await runtime.workflows.drop(principal, workflow, item)
