"""The data plane's immutable table of protected proxies, built from one snapshot of the auth hashes and
then kept current by applying the rows a change names (AuthBuilder), without re-reading the others.

Input: the raw HGETALL results of shared.keys.proxy_auth() and proxy_resources() (read in the same MULTI
as the route table, see shared.keys.auth_config_keys()) and the JWKS JSON at shared.keys.oauth_jwks().
Rows that fail to validate are skipped and reported, never fatal: one bad row never unprotects (or blanks)
the others. A proxy whose own auth row is unreadable fails closed: its hostname is listed in `broken`, and
the data plane answers 503 for it rather than serve it unprotected.
Lookup mirrors routing: exact hostname, then the longest matching `*.suffix`.
Building is pure (no I/O); the caller swaps the result in atomically.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from pydantic import ValidationError

from shared.models import ProxyAuthConfig, ProxyResource

from .access_policy import ProxyAccessPolicy
from .token_verifier import KeySet


@dataclass(frozen=True, slots=True)
class AuthTable:
    policies: Mapping[str, ProxyAccessPolicy] = field(default_factory=lambda: MappingProxyType({}))
    keys: KeySet = field(default_factory=lambda: KeySet(MappingProxyType({})))
    skipped: tuple[str, ...] = ()  # "<hash>/<field>: reason" for the log
    broken: frozenset[str] = frozenset()  # hostnames whose auth row did not validate (fail closed)

    def policy_for(self, hostname: str) -> ProxyAccessPolicy | None:
        """The protection of a (normalised) request hostname, or None when it is not protected."""
        exact = self.policies.get(hostname)
        if exact is not None:
            return exact
        labels = hostname.split(".")
        for index in range(1, len(labels) - 1):
            wildcard = self.policies.get("*." + ".".join(labels[index:]))
            if wildcard is not None:
                return wildcard
        return None


class AuthBuilder:
    """The parsed auth rows behind the current AuthTable; `apply` re-parses and recompiles only the hostnames
    a change names (a row of either hash), and re-reads the keys only when the JWKS text changed."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._configs: dict[str, ProxyAuthConfig] = {}
        self._resources: dict[str, ProxyResource] = {}
        self._broken: set[str] = set()
        self._policies: dict[str, ProxyAccessPolicy] = {}
        self._jwks_json: str | None = None
        self._keys = KeySet(MappingProxyType({}))
        self._jwks_skipped: tuple[str, ...] = ()

    def replace_all(
        self, auth_rows: Mapping[str, str], resource_rows: Mapping[str, str], jwks_json: str | None
    ) -> AuthTable:
        self._reset()
        return self.apply(auth_rows, resource_rows, jwks_json)

    def apply(
        self,
        auth_rows: Mapping[str, str | None],
        resource_rows: Mapping[str, str | None],
        jwks_json: str | None,
    ) -> AuthTable:
        """Changed rows (None = deleted) and the current JWKS text; returns the new table."""
        skipped: list[str] = []
        for hostname, raw in resource_rows.items():
            self._resources.pop(hostname, None)
            if raw is not None:
                try:
                    self._resources[hostname] = ProxyResource.model_validate_json(raw)
                except ValidationError as exc:
                    skipped.append(f"proxy-resources/{hostname}: {exc.error_count()} validation error(s)")
        for hostname, raw in auth_rows.items():
            self._configs.pop(hostname, None)
            self._broken.discard(hostname)
            if raw is not None:
                try:
                    self._configs[hostname] = ProxyAuthConfig.model_validate_json(raw)
                except ValidationError as exc:
                    skipped.append(f"proxy-auth/{hostname}: {exc.error_count()} validation error(s)")
                    self._broken.add(hostname)
        for hostname in set(auth_rows) | set(resource_rows):
            self._policies.pop(hostname, None)
            config = self._configs.get(hostname)
            if config is not None and config.enabled:
                self._policies[config.hostname] = ProxyAccessPolicy.compile(
                    config, self._resources.get(config.hostname)
                )
        if jwks_json != self._jwks_json:
            self._jwks_json = jwks_json
            self._keys, self._jwks_skipped = _key_set(jwks_json)
        return AuthTable(
            MappingProxyType(dict(self._policies)),
            self._keys,
            (*skipped, *self._jwks_skipped),
            frozenset(self._broken - self._policies.keys()),
        )


def _key_set(jwks_json: str | None) -> tuple[KeySet, tuple[str, ...]]:
    if not jwks_json:
        return KeySet(MappingProxyType({})), ()
    try:
        document = json.loads(jwks_json)
    except ValueError:
        return KeySet(MappingProxyType({})), ("oauth-jwks: not JSON",)
    return KeySet.from_jwks(document if isinstance(document, dict) else {}), ()


def build_auth_table(
    auth_rows: Mapping[str, str], resource_rows: Mapping[str, str], jwks_json: str | None
) -> AuthTable:
    return AuthBuilder().replace_all(auth_rows, resource_rows, jwks_json)
