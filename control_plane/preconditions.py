"""Entity tags of stored configuration objects and the If-Match check (RFC 9110 sections 8.8.3, 13.1.1).

An object's ETag is a strong tag: the SHA-256 of its stored JSON (the pydantic model as the store writes
it), so it changes exactly when the stored object changes, whoever changed it (the API, a controller, a
worker), and it is the same on every replica. Views that hide fields (secrets, hashes) are tagged by the
object behind them; the hash reveals nothing about those fields.

The check is strong comparison against a list of tags or `*`; weak tags (`W/"..."`) never match. The store
runs it inside the write's transaction (store.py), so a concurrent write between the check and the commit
makes the transaction re-run and the check fail then.
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel

from .errors import PreconditionFailed


def etag_of_json(stored_json: str) -> str:
    return '"' + hashlib.sha256(stored_json.encode("utf-8")).hexdigest() + '"'


def etag_of(obj: BaseModel) -> str:
    return etag_of_json(obj.model_dump_json())


def _tags(if_match: str) -> list[str]:
    return [part.strip() for part in if_match.split(",") if part.strip()]


def require_match(if_match: str, current_etag: str | None, what: str) -> None:
    """Raise PreconditionFailed (412) unless `if_match` matches the object's current tag.

    `current_etag` None means the object does not exist: nothing matches, not even `*`.
    """
    tags = _tags(if_match)
    if current_etag is not None and ("*" in tags or current_etag in tags):
        return
    if current_etag is None:
        raise PreconditionFailed(f"If-Match failed: {what} does not exist")
    raise PreconditionFailed(
        f"If-Match failed: {what} was changed by someone else (its ETag is now {current_etag}); "
        "read it again and re-apply your change"
    )
