"""What an audit entry may say about an object: its fields, with every secret replaced by "***".

A field is secret when any part of its path names a secret (token, secret, password, private key, hash,
cookie, authorization, verifier, code, encrypted, credential, ...), or when it is the value of an
environment entry marked `secret`. The rule is deliberately wide: an audit entry saying "***" for a field
that was harmless costs little, one that leaks a credential cannot be taken back.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .records import FieldChange

MASK = "***"

_SECRET_NAME = re.compile(
    r"secret|token|passw|private|encrypted|sha256|hash|cookie|authori[sz]ation|verifier|credential|"
    r"api[-_]?key|signature|^code$|_code$|^key$|_key$|^kek|session",
    re.IGNORECASE,
)


def secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def masked(value: Any) -> Any:
    """`value` (parsed JSON) with secret fields replaced."""
    if isinstance(value, dict):
        hidden = value.get("secret") is True
        out: dict[str, Any] = {}
        for key, item in value.items():
            if secret_name(str(key)) or (hidden and key == "value"):
                out[key] = MASK
            else:
                out[key] = masked(item)
        return out
    if isinstance(value, list):
        return [masked(item) for item in value]
    return value


def _flat(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flat(item, f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = value


def _load(document: str | None) -> dict[str, Any]:
    """A stored document as a dict; {} when absent, a marker when damaged (it is never shown raw)."""
    if not document:
        return {}
    try:
        value = json.loads(document)
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {"damaged_row": True}


def diff(old_json: str | None, new_json: str | None, *, prefix: str = "") -> dict[str, FieldChange]:
    """The fields that differ between two stored documents (dotted paths; lists compared whole), masked."""
    old_flat: dict[str, Any] = {}
    new_flat: dict[str, Any] = {}
    for document, flat in ((old_json, old_flat), (new_json, new_flat)):
        loaded = masked(_load(document))
        if loaded:
            _flat(loaded, prefix, flat)
    out: dict[str, FieldChange] = {}
    for path in sorted(set(old_flat) | set(new_flat)):
        if path.rsplit(".", 1)[-1] in ("updated_at", "schema_version"):
            continue
        before, after = old_flat.get(path), new_flat.get(path)
        if before == after:
            # Masked values look equal; say that a secret changed when the stored documents differ there.
            if before == MASK and _raw_at(old_json, path, prefix) != _raw_at(new_json, path, prefix):
                out[path] = FieldChange(old=MASK, new=MASK)
            continue
        out[path] = FieldChange(old=before, new=after)
    return out


def _raw_at(document: str | None, path: str, prefix: str) -> Any:
    value: Any = _load(document)
    parts = path.split(".")
    if prefix:
        parts = parts[len(prefix.split(".")) :]
    for part in parts:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value
