"""ETag and If-Match on the management API (the rules are in preconditions.py).

Single-object GETs tag their answer with the stored object's ETag; PUT, PATCH and DELETE operations that
declare `IF_MATCH` pass the client's If-Match to the store, which checks it inside the write's transaction
(412 when stale) and tags the answer with the object's new ETag. Without If-Match a write behaves as before.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header
from pydantic import BaseModel

from .. import request_context
from ..preconditions import etag_of


async def _if_match(
    if_match: Annotated[
        str | None,
        Header(
            alias="If-Match",
            description=(
                "Only write when the object's current ETag is one of these (from a GET or a previous "
                'write; `*` = any existing object); otherwise 412. Example: `"3f2a..."`'
            ),
        ),
    ] = None,
) -> None:
    context = request_context.current()
    if context is not None and if_match is not None:
        context.if_match = if_match


IF_MATCH = Depends(_if_match)


def tag(stored: BaseModel) -> None:
    """Answer this request with the ETag of `stored` (the object as the store holds it)."""
    context = request_context.current()
    if context is not None:
        context.etag = etag_of(stored)
