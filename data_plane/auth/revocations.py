"""The set of revoked access-token ids a data plane refuses, as an immutable snapshot.

Loaded whole from the sorted set shared.keys.oauth_revoked_jtis() (member jti, score = token expiry) and
updated from messages on shared.keys.oauth_revocations_channel() ("<jti> <exp>"); each update returns a new
snapshot to swap in. Entries past their token's expiry are dropped: an expired token is refused anyway.
Pub/sub is a hint only: the periodic snapshot reload is what guarantees convergence.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class RevokedTokens:
    expiry_by_jti: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_entries(cls, entries: Iterable[tuple[str, float]], *, now: float) -> RevokedTokens:
        return cls(MappingProxyType({jti: float(exp) for jti, exp in entries if float(exp) >= now}))

    def __contains__(self, jti: object) -> bool:
        return jti in self.expiry_by_jti

    def __len__(self) -> int:
        return len(self.expiry_by_jti)

    def with_message(self, message: str, *, now: float) -> RevokedTokens:
        """Apply one channel message; a malformed message changes nothing."""
        jti, _, exp_text = message.strip().partition(" ")
        try:
            exp = float(exp_text)
        except ValueError:
            return self
        if not jti or exp < now:
            return self
        merged = {k: v for k, v in self.expiry_by_jti.items() if v >= now}
        merged[jti] = exp
        return RevokedTokens(MappingProxyType(merged))
