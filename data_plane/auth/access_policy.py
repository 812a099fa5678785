"""Per-proxy protection compiled once from the stored config (ProxyAuthConfig + ProxyResource) into plain
slotted data for the hot path: is a path public, which scopes does a request need, and which headers carry
the identity upstream (client copies of those, and of every other identity header, are dropped by
protocol.forwarding, so nobody can forge an identity).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from data_plane.protocol.request_target import normalise_prefix, under_prefix
from shared.models import ProxyAuthConfig, ProxyResource

from .forward_memo import ForwardMemo
from .protected_resource import PRM_WELL_KNOWN
from .token_verifier import Identity, TokenRequirements

_MEMO_ENTRIES = 4096
# Identity header values must not carry control characters: removed (str.translate: one C pass).
_CONTROL_CHARACTERS = dict.fromkeys([*range(0x20), 0x7F])

ACME_CHALLENGE_PREFIX = "/.well-known/acme-challenge/"


@dataclass(frozen=True, slots=True)
class ScopeRuleData:
    path_prefix: str
    methods: frozenset[str]
    scopes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ProxyAccessPolicy:
    hostname: str
    resource_path: str
    resource_name: str
    resource_documentation: str
    scopes_supported: tuple[str, ...]
    required_scopes: tuple[str, ...]
    scope_rules: tuple[ScopeRuleData, ...]
    public_paths: tuple[str, ...]
    allowed_users: frozenset[str]
    allowed_orgs: frozenset[str]
    identity_headers: tuple[tuple[str, str], ...]
    allowed_origins: frozenset[str] = frozenset()  # empty: Origin is not checked
    allowed_clients: frozenset[str] = frozenset()  # client_credentials tokens admitted, by client id
    identity_header_names: frozenset[bytes] = frozenset()  # of identity_headers, lower-case bytes
    # Derived per compiled policy (a config change compiles a new one), bounded: what requests need again.
    _requirements: dict[tuple[str, frozenset[str], tuple[str, ...]], TokenRequirements] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _identity_headers: dict[Identity, tuple[tuple[bytes, bytes], ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    # The gate's Forward decisions for valid tokens under this policy (auth/forward_memo.py).
    forwards: ForwardMemo = field(default_factory=ForwardMemo, init=False, repr=False, compare=False)

    @classmethod
    def compile(cls, config: ProxyAuthConfig, resource: ProxyResource | None) -> ProxyAccessPolicy:
        resource = resource or ProxyResource(hostname=config.hostname)
        supported = list(resource.scopes_supported)
        for scope in [*config.required_scopes, *(s for r in config.scope_rules for s in r.scopes)]:
            if scope not in supported:
                supported.append(scope)
        return cls(
            hostname=config.hostname,
            resource_path=resource.path,
            resource_name=resource.resource_name,
            resource_documentation=resource.resource_documentation,
            scopes_supported=tuple(supported),
            required_scopes=tuple(config.required_scopes),
            scope_rules=tuple(
                ScopeRuleData(normalise_prefix(r.path_prefix), frozenset(r.methods), tuple(r.scopes))
                for r in config.scope_rules
            ),
            public_paths=tuple(normalise_prefix(p) for p in config.public_paths),
            allowed_users=frozenset(config.allowed_users),
            allowed_orgs=frozenset(config.allowed_orgs),
            identity_headers=tuple(config.identity_headers.items()),
            allowed_origins=frozenset(config.allowed_origins),
            allowed_clients=frozenset(config.allowed_clients),
            identity_header_names=frozenset(h.lower().encode("ascii") for h in config.identity_headers),
        )

    def is_public(self, path: str) -> bool:
        """PRM documents, ACME challenges and configured exclusions never need a token. `path` is
        normalised (protocol.request_target), and prefixes match on segment boundaries."""
        if (
            path == PRM_WELL_KNOWN
            or path.startswith(PRM_WELL_KNOWN + "/")
            or path.startswith(ACME_CHALLENGE_PREFIX)
        ):
            return True
        return any(under_prefix(path, prefix) for prefix in self.public_paths)

    def scopes_for(self, path: str, method: str) -> tuple[str, ...]:
        for rule in self.scope_rules:
            if under_prefix(path, rule.path_prefix) and (not rule.methods or method.upper() in rule.methods):
                return rule.scopes
        return self.required_scopes

    def requirements(
        self, *, issuer: str, audiences: frozenset[str], path: str, method: str
    ) -> TokenRequirements:
        scopes = self.scopes_for(path, method)
        key = (issuer, audiences, scopes)
        known = self._requirements.get(key)
        if known is not None:
            return known
        if len(self._requirements) >= _MEMO_ENTRIES:
            self._requirements.clear()
        known = self._requirements[key] = TokenRequirements(
            issuer=issuer,
            audiences=audiences,
            scopes=scopes,
            allowed_users=self.allowed_users,
            allowed_orgs=self.allowed_orgs,
            allowed_clients=self.allowed_clients,
        )
        return known

    def encoded_identity_headers(self, identity: Identity) -> tuple[tuple[bytes, bytes], ...]:
        """upstream_identity_headers as (lower-case name, UTF-8 value) bytes, built once per identity."""
        known = self._identity_headers.get(identity)
        if known is None:
            if len(self._identity_headers) >= _MEMO_ENTRIES:
                self._identity_headers.clear()
            known = self._identity_headers[identity] = tuple(
                (header.lower().encode("latin-1"), value.encode("utf-8"))
                for header, value in self.upstream_identity_headers(identity)
            )
        return known

    def upstream_identity_headers(self, identity: Identity) -> list[tuple[str, str]]:
        values = {
            "login": identity.login,
            "sub": identity.sub,
            "email": identity.email,
            "orgs": ",".join(identity.orgs),
            "scope": " ".join(identity.scopes),
            "client_id": identity.client_id,
            "name": identity.name,
        }
        # Header values must not carry control characters (they come from GitHub via our token). A field the
        # token does not have (a machine client has no login) is left out rather than sent empty.
        return [
            (header, values[field].translate(_CONTROL_CHARACTERS))
            for header, field in self.identity_headers
            if values[field]
        ]
