"""The gate's Forward decisions for valid tokens, remembered per protected proxy (one memo per compiled
policy), so a client that sends the same token to the same path again pays a dictionary lookup and the
checks that can change without any object changing: the clock and the revoked set.

Key: (the Authorization header's bytes, the request's origin, its normalised path, its method). Under one
compiled policy that key fixes everything else the decision read: the token (a pure function of the header),
the audiences (origin and the policy's resource path), the path's kind (PRM, authorization server, public or
token) and the scopes its rule requires, the allowlist. What a key does not fix is held in the entry and
compared on every hit: the key set it was verified under (a rotation builds a new KeySet) and the issuer;
expiry and not-before are judged against `now` by token_verifier.lifetime_problem, the rule
token_verifier.authenticate applies, with the same leeway; the token id against the revoked set current for
this request. A policy change compiles a new policy, and so starts an empty memo. Only Allow decisions are
remembered (no stranger can fill the memo without valid tokens); the memo is bounded and emptied when full,
like the policy's other memos.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass

from data_plane.protocol.forwarding import AssertedIdentity

from .token_verifier import KeySet, lifetime_problem

# Per protected proxy. An entry holds its key's Authorization value (a token is ~1 KB), so a memo stays near
# 1 MB at most; a client that walks more distinct paths than this only costs full decisions again.
MAX_REMEMBERED_FORWARDS = 1024

MemoKey = tuple[bytes, str, str, bytes]  # Authorization value, origin, normalised path, method


@dataclass(frozen=True, slots=True)
class RememberedForward:
    keys: KeySet
    issuer: str
    expires: float  # the token's exp
    not_before: float | None  # its nbf, when it has a numeric one
    leeway_seconds: int
    jti: str
    asserted: AssertedIdentity
    login: str
    client_id: str

    def admits(self, keys: KeySet, issuer: str, revoked: Container[str], now: float) -> bool:
        """Whether the remembered decision still holds for a request at `now` (else: decide afresh)."""
        if keys is not self.keys or issuer != self.issuer:
            return False
        if lifetime_problem(now, self.expires, self.not_before, self.leeway_seconds) is not None:
            return False
        return self.jti not in revoked


class ForwardMemo:
    """A bounded map MemoKey -> RememberedForward; lives as long as the compiled policy that holds it."""

    __slots__ = ("_entries", "max_entries")

    def __init__(self, max_entries: int = MAX_REMEMBERED_FORWARDS) -> None:
        self._entries: dict[MemoKey, RememberedForward] = {}
        self.max_entries = max_entries

    def get(self, key: MemoKey) -> RememberedForward | None:
        return self._entries.get(key)

    def remember(self, key: MemoKey, entry: RememberedForward) -> None:
        entries = self._entries
        if len(entries) >= self.max_entries and key not in entries:
            entries.clear()
        entries[key] = entry

    def forget(self, key: MemoKey) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)
