"""The data plane's immutable table of protected proxies, built from one snapshot of the auth hashes.

Input: the raw HGETALL results of shared.keys.proxy_auth() and proxy_resources() (read in the same MULTI
as the route table, see shared.keys.auth_config_keys()) and the JWKS JSON at shared.keys.oauth_jwks().
Rows that fail to validate are skipped and reported, never fatal: one bad row never unprotects (or blanks)
the others. A proxy whose own auth row is unreadable fails closed: its hostname is listed in `broken`, and
the data plane answers 503 for it rather than serve it unprotected.
Lookup mirrors routing: exact hostname, then the longest matching `*.suffix`.
Building is pure; the caller swaps the result in atomically.
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


def build_auth_table(
    auth_rows: Mapping[str, str], resource_rows: Mapping[str, str], jwks_json: str | None
) -> AuthTable:
    skipped: list[str] = []
    resources: dict[str, ProxyResource] = {}
    for hostname, raw in resource_rows.items():
        try:
            resources[hostname] = ProxyResource.model_validate_json(raw)
        except ValidationError as exc:
            skipped.append(f"proxy-resources/{hostname}: {exc.error_count()} validation error(s)")
    policies: dict[str, ProxyAccessPolicy] = {}
    broken: set[str] = set()
    for hostname, raw in auth_rows.items():
        try:
            config = ProxyAuthConfig.model_validate_json(raw)
        except ValidationError as exc:
            skipped.append(f"proxy-auth/{hostname}: {exc.error_count()} validation error(s)")
            broken.add(hostname)
            continue
        if config.enabled:
            policies[config.hostname] = ProxyAccessPolicy.compile(config, resources.get(config.hostname))
    keys = KeySet(MappingProxyType({}))
    if jwks_json:
        try:
            document = json.loads(jwks_json)
            keys = KeySet.from_jwks(document if isinstance(document, dict) else {})
        except ValueError:
            skipped.append("oauth-jwks: not JSON")
    return AuthTable(MappingProxyType(policies), keys, tuple(skipped), frozenset(broken - policies.keys()))
