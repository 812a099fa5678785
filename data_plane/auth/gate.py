"""The protection of one request to a protected proxy: the request head in, one decision out (sans-IO).

`decide` returns
- `Answer`: the data plane responds itself (the PRM document, a CORS preflight, 401/403 with
  WWW-Authenticate, 403 for a disallowed Origin, 400 for an unusable Host, 503 when the proxy's protection
  config is unreadable);
- `ToAuthorizationServer`: forward the request unchanged to the AUTH_HOST proxy (2025-03-26 clients look for
  AS metadata and /authorize, /token, /register on the resource's own origin);
- `Forward`: send it upstream with `headers` in place of the client's (Authorization and the authorization
  server's cookies removed) and `asserted`, the proxy's identity headers: protocol.forwarding drops every
  client copy of an identity header and adds ours (when a token was verified) after all client headers are
  filtered. When `mcp_check` is set, the body must be checked against the Mcp-Method / Mcp-Name headers
  (`check_body`) before anything goes upstream. `cors` is set for a token-checked browser request: the
  relayed answer carries the proxy's CORS headers.

Order: Origin allowlist, PRM documents, authorization-server paths, public paths (forwarded without a token,
preflights included: the upstream answers for its public paths), CORS preflights (answered here: a preflight
carries no credentials and must not reach the upstream, which may not even know OPTIONS), then the token.
A token the policy already let through to the same origin, path and method is judged from the policy's memo
(auth/forward_memo.py) on the clock and the revoked set alone; everything else that decision read is fixed
by the memo's key and the policy object.
CORS: with no allowed_origins configured any origin may call (`*`: bearer tokens, not cookies, so another
site gains nothing); with a list, the caller's Origin is echoed with `Vary: Origin`. The token is only ever
read from the Authorization header; a query-string `access_token` is ignored (and so is refused as "no
token"). Nothing here reads the clock or does I/O.
"""

from __future__ import annotations

import json
from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from data_plane.protocol.forwarding import AssertedIdentity, ResponseCors

from . import mcp_headers
from .access_policy import ProxyAccessPolicy
from .forward_memo import MemoKey, RememberedForward
from .protected_resource import (
    PRM_WELL_KNOWN,
    accepted_audiences,
    is_authorization_server_path,
    origin_of,
    prm_body,
    prm_document,
    prm_paths,
    prm_url,
    resource_uri,
    www_authenticate,
)
from .token_verifier import Deny, KeySet, bearer_token, verify

Headers = list[tuple[bytes, bytes]]

# The Mcp-* body check buffers at most this much of a request body; a larger body that carries those
# headers is refused (413) rather than sent upstream unchecked.
MAX_CHECKED_BODY_BYTES = 1024 * 1024
# A refused request's body is read and dropped up to this size so the connection survives (and the answer
# is not lost to a reset); beyond it the connection is closed after the answer.
MAX_DISCARDED_BODY_BYTES = 1024 * 1024
PRM_CACHE_SECONDS = 60
_JSON = (b"content-type", b"application/json")
_CORS_ANY = (b"access-control-allow-origin", b"*")
# Browser-based MCP clients must be able to read the challenge of a cross-origin 401/403.
_CORS_EXPOSE = (b"access-control-expose-headers", b"WWW-Authenticate")
_NO_STORE = (b"cache-control", b"no-store")
# What a browser MCP client sends (MCP-AUTH: Streamable HTTP headers; Mcp-Method / Mcp-Name from 2026-07-28).
PREFLIGHT_ALLOW_METHODS = b"GET, POST, DELETE, OPTIONS"
PREFLIGHT_ALLOW_HEADERS = (
    b"Authorization, Content-Type, Mcp-Session-Id, MCP-Protocol-Version, Last-Event-ID, Mcp-Method, Mcp-Name"
)
PREFLIGHT_MAX_AGE_SECONDS = 86400
# Name prefix of the authorization server's cookies (control_plane/oauth/cookies.py).
AUTH_SERVER_COOKIE_PREFIX = b"__Host-mhp_"


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: tuple[tuple[bytes, bytes], ...]  # content-type and the like; framing is the caller's
    body: bytes


@dataclass(frozen=True, slots=True)
class ToAuthorizationServer:
    pass


@dataclass(frozen=True, slots=True)
class McpCheck:
    mcp_method: str | None
    mcp_name: str | None


class Forward(NamedTuple):
    """Per request, so a NamedTuple like dispatch's values (a frozen dataclass costs ~0.4 us more to make)."""

    headers: Headers
    asserted: AssertedIdentity
    mcp_check: McpCheck | None = None
    login: str = ""  # who the request runs as: a login, "client:<id>" for a machine, "" without a token
    cors: ResponseCors | None = None
    client_id: str = ""  # the token's OAuth client ("" without a token), for the request log


GateDecision = Answer | ToAuthorizationServer | Forward


@dataclass(frozen=True, slots=True)
class AuthContext:
    """What every decision needs besides the request: the issuer and the key / revocation snapshots."""

    issuer: str
    keys: KeySet
    revoked: Container[str]


def _json_answer(status: int, document: Mapping[str, object], *extra: tuple[bytes, bytes]) -> Answer:
    body = json.dumps(document, separators=(",", ":")).encode("utf-8")
    return Answer(status, (_JSON, _NO_STORE, *extra), body)


def _error(status: int, error: str, description: str) -> Answer:
    return _json_answer(status, {"error": error, "error_description": description}, _CORS_ANY)


def decide(
    policy: ProxyAccessPolicy | None,
    context: AuthContext,
    *,
    scheme: str,
    method: bytes,
    path: str,
    headers: Headers,
    now: float,
) -> GateDecision:
    """`policy` None means the proxy is protected but its config could not be read: fail closed."""
    if policy is None:
        return _error(
            503,
            "temporarily_unavailable",
            "this service's access configuration is invalid; ask the operator of this proxy to fix it",
        )
    host = b""
    origin_header: bytes | None = None
    authorizations: list[bytes] = []
    mcp_method: bytes | None = None
    mcp_name: bytes | None = None
    content_type: bytes | None = None
    repeated = b""
    preflight = False
    # What goes upstream if the request is forwarded, built in the same pass: the client's headers minus
    # Authorization and the authorization server's own cookies (see _without_auth_cookies).
    kept: Headers = []
    for header in headers:
        name, value = header
        if name == b"authorization":
            authorizations.append(value)
            continue
        if name == b"cookie" and AUTH_SERVER_COOKIE_PREFIX in value:
            filtered = _without_auth_cookies(value)
            if filtered:
                kept.append((name, filtered))
            continue
        kept.append(header)
        if name == b"host":
            host = value
        elif name == b"origin":
            repeated = repeated or (name if origin_header is not None else b"")
            origin_header = value
        elif name == b"mcp-method":
            repeated = repeated or (name if mcp_method is not None else b"")
            mcp_method = value
        elif name == b"mcp-name":
            repeated = repeated or (name if mcp_name is not None else b"")
            mcp_name = value
        elif name == b"content-type":
            repeated = repeated or (name if content_type is not None else b"")
            content_type = value
        elif name == b"access-control-request-method":
            preflight = True
    if repeated:
        # The gate would judge one copy and the upstream might read the other (most frameworks take the
        # first): headers that decide the Origin and Mcp-* checks must be unambiguous.
        repeated_name = repeated.decode("ascii")
        return _error(400, "invalid_request", f"send at most one {repeated_name} header")

    origin = origin_of(scheme, host.decode("latin-1"))
    if origin is None:
        return _error(400, "invalid_request", "the Host header is not a usable host name")
    if policy.allowed_origins and origin_header is not None:
        caller = _canonical_origin(origin_header)
        if caller != origin and caller not in policy.allowed_origins:
            return _error(
                403,
                "access_denied",
                "requests from this web origin are not allowed; ask the operator of this proxy to add it "
                "to the proxy's allowed origins",
            )

    resource_path = policy.resource_path
    is_preflight = preflight and method == b"OPTIONS" and origin_header is not None
    memo_key: MemoKey | None = None
    if len(authorizations) == 1 and not is_preflight:
        # A token this policy already let through to this path: only time and revocation can have changed
        # (auth/forward_memo.py says why nothing else can).
        memo_key = (authorizations[0], origin, path, method)
        remembered = policy.forwards.get(memo_key)
        if remembered is not None:
            if remembered.admits(context.keys, context.issuer, context.revoked, now):
                return _forward(
                    policy,
                    kept,
                    remembered.asserted,
                    remembered.login,
                    remembered.client_id,
                    method,
                    mcp_method,
                    mcp_name,
                    content_type,
                    origin_header,
                )
            policy.forwards.forget(memo_key)

    if path == PRM_WELL_KNOWN or path.startswith(PRM_WELL_KNOWN + "/"):
        return _prm_answer(policy, context, origin, path, method)
    if is_authorization_server_path(path):
        return ToAuthorizationServer()

    if policy.is_public(path):
        return Forward(kept, AssertedIdentity(policy.identity_header_names))
    if is_preflight:
        assert origin_header is not None
        return _preflight_answer(_allow_origin(policy, origin_header))
    if len(authorizations) > 1:
        # Two credentials are ambiguous (which one would a later hop believe?): RFC 6750 invalid_request.
        challenge = www_authenticate(
            prm_url(origin, resource_path),
            error="invalid_request",
            description="send exactly one Authorization header",
        )
        return _json_answer(
            400,
            {"error": "invalid_request", "error_description": "send exactly one Authorization header"},
            (b"www-authenticate", challenge.encode("latin-1", "replace")),
            _CORS_ANY,
            _CORS_EXPOSE,
        )
    requirements = policy.requirements(
        issuer=context.issuer,
        audiences=accepted_audiences(origin, resource_path),
        path=path,
        method=method.decode("ascii", "replace"),
    )
    token = bearer_token(authorizations[0].decode("latin-1")) if authorizations else None
    decision = verify(token, context.keys, requirements, now=now, revoked=context.revoked)
    if isinstance(decision, Deny):
        return _deny_answer(decision, origin, resource_path, requirements.scopes)
    identity = decision.identity
    asserted = AssertedIdentity(policy.identity_header_names, policy.encoded_identity_headers(identity))
    login = identity.login or identity.sub
    claims = context.keys.verified.get(token) if token is not None else None
    if memo_key is not None and claims is not None:
        nbf = claims.get("nbf")
        policy.forwards.remember(
            memo_key,
            RememberedForward(
                keys=context.keys,
                issuer=context.issuer,
                expires=claims["exp"],
                not_before=nbf if isinstance(nbf, int | float) else None,
                leeway_seconds=requirements.leeway_seconds,
                jti=identity.jti,
                asserted=asserted,
                login=login,
                client_id=identity.client_id,
            ),
        )
    return _forward(
        policy,
        kept,
        asserted,
        login,
        identity.client_id,
        method,
        mcp_method,
        mcp_name,
        content_type,
        origin_header,
    )


def _forward(
    policy: ProxyAccessPolicy,
    headers: Headers,
    asserted: AssertedIdentity,
    login: str,
    client_id: str,
    method: bytes,
    mcp_method: bytes | None,
    mcp_name: bytes | None,
    content_type: bytes | None,
    origin_header: bytes | None,
) -> Forward:
    """A request whose token passed: what goes upstream (`headers`: the client's, as kept), and the checks
    still to run on it."""
    check = None
    if (
        (mcp_method is not None or mcp_name is not None)
        and method == b"POST"
        and (content_type or b"").split(b";", 1)[0].strip().lower() == b"application/json"
    ):
        check = McpCheck(
            None if mcp_method is None else mcp_method.decode("latin-1"),
            None if mcp_name is None else mcp_name.decode("latin-1"),
        )
    cors = None if origin_header is None else ResponseCors(_allow_origin(policy, origin_header))
    return Forward(headers, asserted, check, login, cors, client_id)


def _allow_origin(policy: ProxyAccessPolicy, origin_header: bytes) -> bytes:
    """Access-Control-Allow-Origin for a caller that passed the Origin check."""
    return origin_header.strip() if policy.allowed_origins else b"*"


def _preflight_answer(allow_origin: bytes) -> Answer:
    headers = [
        (b"access-control-allow-origin", allow_origin),
        (b"access-control-allow-methods", PREFLIGHT_ALLOW_METHODS),
        (b"access-control-allow-headers", PREFLIGHT_ALLOW_HEADERS),
        (b"access-control-max-age", b"%d" % PREFLIGHT_MAX_AGE_SECONDS),
    ]
    if allow_origin != b"*":
        headers.append((b"vary", b"Origin"))
    return Answer(204, tuple(headers), b"")


def _without_auth_cookies(cookie: bytes) -> bytes:
    """A Cookie header without the authorization server's own cookies ("" when none is left): a 2025-03-26
    client logs in through the resource host, so the browser holds our session cookie for this origin, and
    the upstream must never see it (it could act as the user at /authorize)."""
    pairs = [p for p in cookie.split(b";") if not p.strip().startswith(AUTH_SERVER_COOKIE_PREFIX)]
    return b";".join(pairs).strip()


def effective_scheme(scheme: str, headers: Headers, *, trusted_peer: bool) -> str:
    """The scheme the client used: ours, unless a trusted proxy in front (which may terminate TLS) says
    otherwise in X-Forwarded-Proto. The resource URI, and so the token audience, depends on it."""
    if trusted_peer:
        for name, value in headers:
            if name == b"x-forwarded-proto":
                # The first hop's view is the client's; later hops append theirs.
                forwarded = value.split(b",", 1)[0].strip().lower()
                if forwarded in (b"http", b"https"):
                    return forwarded.decode("ascii")
    return scheme


def check_body(check: McpCheck, body: bytes | None) -> Answer | None:
    """None when the body agrees with the Mcp-* headers; `body` None means it exceeded the check's bound."""
    if body is None:
        return _error(
            413,
            "invalid_request",
            f"a request with Mcp-Method/Mcp-Name headers may carry at most {MAX_CHECKED_BODY_BYTES} bytes",
        )
    result = mcp_headers.check(check.mcp_method, check.mcp_name, body)
    if isinstance(result, mcp_headers.HeadersMismatch):
        return _error(result.status, "invalid_request", result.reason)
    return None


def _canonical_origin(value: bytes) -> str | None:
    text = value.decode("latin-1").strip()
    scheme, sep, rest = text.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or "/" in rest:
        return None
    return origin_of(scheme.lower(), rest)


def _prm_answer(
    policy: ProxyAccessPolicy, context: AuthContext, origin: str, path: str, method: bytes
) -> Answer:
    if path not in prm_paths(policy.resource_path):
        return _json_answer(
            404,
            {"error": "not_found", "error_description": "no protected resource at this path"},
            _CORS_ANY,
        )
    if method == b"OPTIONS":
        return Answer(
            204,
            (
                _CORS_ANY,
                (b"access-control-allow-methods", b"GET, HEAD, OPTIONS"),
                (b"access-control-allow-headers", b"*"),
                (b"access-control-max-age", b"86400"),
            ),
            b"",
        )
    if method not in (b"GET", b"HEAD"):
        return Answer(405, (_JSON, (b"allow", b"GET, HEAD, OPTIONS")), b'{"error":"method_not_allowed"}')
    document = prm_document(
        resource=resource_uri(origin, policy.resource_path),
        issuer=context.issuer,
        scopes_supported=policy.scopes_supported,
        resource_name=policy.resource_name,
        resource_documentation=policy.resource_documentation,
    )
    return Answer(
        200,
        (_JSON, _CORS_ANY, (b"cache-control", b"public, max-age=%d" % PRM_CACHE_SECONDS)),
        prm_body(document),
    )


def _deny_answer(decision: Deny, origin: str, resource_path: str, scopes: tuple[str, ...]) -> Answer:
    # A 403 for a user not on the allowlist carries no error code in the challenge: re-authorising (what an
    # error there would invite) cannot help; the body says who can.
    error = decision.error if decision.error != "access_denied" else None
    challenge = www_authenticate(
        prm_url(origin, resource_path),
        error=error,
        description=decision.description if error else None,
        scope=decision.scope or (" ".join(scopes) if decision.status == 401 and scopes else None),
    )
    return _json_answer(
        decision.status,
        {"error": decision.error or "unauthorized", "error_description": decision.description},
        (b"www-authenticate", challenge.encode("latin-1", "replace")),
        _CORS_ANY,
        _CORS_EXPOSE,
    )
