"""`mhp oauth login`, `mhp proxy auth|resource ...` and `mhp resources list`.

mhp oauth login [--resource URI] [--scope S]       device flow (GitHub); prints the tokens
mhp oauth client create NAME --redirect-uri URI... [--public] [--client-credentials] [--scope S]
                        [--client-uri URL]
mhp oauth client list | show ID | delete ID         pre-registered OAuth clients (admin only)
mhp oauth keys list | rotate [--retire-after S]      token-signing keys (admin only)
mhp oauth consents list|revoke [--login L] [--client ID] [--id ID]   users' remembered consents (admin)
mhp proxy auth set HOST [--allow-user L]... [--allow-org O]... [--allow-client ID]... [--scope S]...
                        [--public-path P]... [--allow-origin O]... [--identity-header NAME=FIELD]...
                        [--disabled]
mhp proxy auth show|remove HOST
mhp proxy resource set HOST [--path P] [--scope S]... [--name N] [--docs URL]
mhp proxy resource show HOST
mhp resources list
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from ..oauth.api_access import CLI_CLIENT_ID
from .client import ApiClient, CliError, ConnectionFailed
from .render import CONSENT_COLUMNS, OAUTH_CLIENT_COLUMNS, SIGNING_KEY_COLUMNS

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
MAX_LOGIN_SECONDS = 900.0
PROXIES = "/api/v1/proxy/targets/"
OAUTH_CLIENTS = "/api/v1/oauth/clients/"
SIGNING_KEYS = "/api/v1/oauth/keys/"
CONSENTS = "/api/v1/oauth/consents/"

Command = Callable[..., argparse.ArgumentParser]


def _host_path(hostname: str, leaf: str) -> str:
    from urllib.parse import quote

    return f"{PROXIES}{quote(hostname, safe='*')}/{leaf}"


def _key_value(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=FIELD, got {text!r}")
    return name, value


def _post_form(http: httpx.Client, path: str, data: dict[str, str]) -> tuple[int, dict[str, Any]]:
    try:
        response = http.post(path, data=data)
    except httpx.TransportError as exc:
        raise ConnectionFailed(
            f"cannot reach the authorization server ({type(exc).__name__}: {exc})"
        ) from exc
    try:
        body = response.json()
    except ValueError as exc:
        raise CliError(f"{response.status_code}: the authorization server answered without JSON") from exc
    return response.status_code, body if isinstance(body, dict) else {}


def oauth_login(api: ApiClient, args: argparse.Namespace) -> Any:
    """RFC 8628 device flow against the control plane's authorization server."""
    start: dict[str, str] = {"client_id": CLI_CLIENT_ID}
    if args.scope:
        start["scope"] = " ".join(args.scope)
    if args.resource:
        start["resource"] = args.resource
    with httpx.Client(base_url=api.base_url, timeout=30) as http:
        status, body = _post_form(http, "/device/code", start)
        if status != 200:
            raise CliError(
                f"{status}: {body.get('error_description') or body.get('error') or 'device login failed'}"
            )
        print(
            f"To sign in, open {body['verification_uri']} and enter the code {body['user_code']}",
            file=sys.stderr,
            flush=True,
        )
        interval = float(body.get("interval", 5))
        deadline = time.monotonic() + min(float(body.get("expires_in", MAX_LOGIN_SECONDS)), MAX_LOGIN_SECONDS)
        poll = {"grant_type": DEVICE_GRANT, "device_code": body["device_code"], "client_id": CLI_CLIENT_ID}
        while time.monotonic() < deadline:
            time.sleep(interval)
            status, tokens = _post_form(http, "/device/token", poll)
            if status == 200 and "access_token" in tokens:
                if not args.json:
                    print("Signed in. Use the access token as MHP_TOKEN (shown once):", file=sys.stderr)
                return tokens
            error = tokens.get("error", "")
            if error == "authorization_pending":
                continue
            if error == "slow_down":
                interval += 5
                continue
            raise CliError(f"{status}: {tokens.get('error_description') or error or 'device login failed'}")
    raise CliError("the device login expired before it was approved")


def auth_set(api: ApiClient, args: argparse.Namespace) -> Any:
    body: dict[str, Any] = {
        "enabled": not args.disabled,
        "allowed_users": args.allow_user or [],
        "allowed_orgs": args.allow_org or [],
        "public_paths": args.public_path or [],
        "allowed_origins": args.allow_origin or [],
        "allowed_clients": args.allow_client or [],
    }
    if args.scope:
        body["required_scopes"] = args.scope
    if args.identity_header:
        body["identity_headers"] = dict(args.identity_header)
    return api.request("PUT", _host_path(args.hostname, "auth"), body)


def auth_remove(api: ApiClient, args: argparse.Namespace) -> Any:
    api.request("DELETE", _host_path(args.hostname, "auth"))
    return {"hostname": args.hostname, "protected": False}


def resource_set(api: ApiClient, args: argparse.Namespace) -> Any:
    # No ETag when nothing is stored yet (the defaults): then the PUT is unconditional.
    current, etag = api.read(_host_path(args.hostname, "resource"))
    body = {k: current[k] for k in ("path", "scopes_supported", "resource_name", "resource_documentation")}
    if args.path is not None:
        body["path"] = args.path
    if args.scope:
        body["scopes_supported"] = args.scope
    if args.name is not None:
        body["resource_name"] = args.name
    if args.docs is not None:
        body["resource_documentation"] = args.docs
    return api.request("PUT", _host_path(args.hostname, "resource"), body, if_match=etag)


RESOURCE_COLUMNS = [
    ("RESOURCE", "resource"),
    ("PROXY", "proxy"),
    ("SCOPES", "scopes"),
    ("USERS", "allowed_users"),
    ("ORGS", "allowed_orgs"),
    ("OWNER", "owner"),
]


def oauth_client_create(api: ApiClient, args: argparse.Namespace) -> Any:
    body: dict[str, Any] = {
        "client_name": args.name,
        "redirect_uris": args.redirect_uri,
        "token_endpoint_auth_method": "none" if args.public else "client_secret_basic",
        "scope": " ".join(args.scope or []),
        "client_uri": args.client_uri or "",
        "allow_client_credentials": args.client_credentials,
    }
    created = api.request("POST", OAUTH_CLIENTS, body)
    if created.get("client_secret") and not args.json:
        print("The client secret is shown once; store it now.", file=sys.stderr)
    return created


def _client_path(client_id: str) -> str:
    return OAUTH_CLIENTS + quote(client_id, safe="")


def _consent_filters(args: argparse.Namespace) -> str:
    filters = {"login": args.login, "client_id": args.client, "consent_id": getattr(args, "id", None)}
    query = urlencode({k: v for k, v in filters.items() if v})
    return f"{CONSENTS}?{query}" if query else CONSENTS


def oauth_consents_revoke(api: ApiClient, args: argparse.Namespace) -> Any:
    if not (args.login or args.client or args.id):
        raise CliError("name what to revoke: --login, --client and/or --id")
    return api.request("DELETE", _consent_filters(args))


def oauth_keys_rotate(api: ApiClient, args: argparse.Namespace) -> Any:
    body = {} if args.retire_after is None else {"retire_previous_after_seconds": args.retire_after}
    return api.request("POST", SIGNING_KEYS + "rotate", body)


def add_auth_commands(groups: Any, proxy: Any, command: Command) -> None:
    oauth = groups.add_parser("oauth", help="OAuth sign-in and clients").add_subparsers(
        dest="action", required=True
    )
    sub = command(oauth, "login", oauth_login, [], help_text="sign in with GitHub (device flow)")
    sub.add_argument(
        "--resource", metavar="URI", help="protected resource the token is for (default: the API)"
    )
    sub.add_argument("--scope", action="append", metavar="SCOPE")
    client = oauth.add_parser("client", help="pre-registered OAuth clients (admin only)").add_subparsers(
        dest="client_action", required=True
    )
    columns = [*OAUTH_CLIENT_COLUMNS, ("SECRET", "client_secret")]
    sub = command(
        client, "create", oauth_client_create, columns, help_text="register a client that never expires"
    )
    sub.add_argument("name", help="client name shown on the consent page")
    sub.add_argument(
        "--redirect-uri", action="append", required=True, metavar="URI", help="exact redirect URI"
    )
    sub.add_argument("--public", action="store_true", help="public client: PKCE only, no secret")
    sub.add_argument("--scope", action="append", metavar="SCOPE")
    sub.add_argument("--client-uri", metavar="URL", help="home page shown on the consent page")
    sub.add_argument(
        "--client-credentials",
        action="store_true",
        help="also allow the client_credentials grant (machine client, no user)",
    )
    command(client, "list", lambda api, a: api.request("GET", OAUTH_CLIENTS), OAUTH_CLIENT_COLUMNS, many=True)
    sub = command(client, "show", lambda api, a: api.request("GET", _client_path(a.client_id)), [])
    sub.add_argument("client_id")
    sub = command(client, "delete", lambda api, a: api.request("DELETE", _client_path(a.client_id)), [])
    sub.add_argument("client_id")

    signing = oauth.add_parser("keys", help="token-signing keys (admin only)").add_subparsers(
        dest="keys_action", required=True
    )
    command(signing, "list", lambda api, a: api.request("GET", SIGNING_KEYS), SIGNING_KEY_COLUMNS, many=True)
    sub = command(
        signing,
        "rotate",
        oauth_keys_rotate,
        SIGNING_KEY_COLUMNS,
        many=True,
        help_text="a new key signs from now on; the old one verifies until it retires",
    )
    sub.add_argument(
        "--retire-after",
        type=int,
        metavar="SECONDS",
        help="how long the replaced key still verifies (default: the access-token lifetime plus a margin; "
        "0 = at once, for a leaked key)",
    )

    consents = oauth.add_parser("consents", help="users' remembered consents (admin only)").add_subparsers(
        dest="consents_action", required=True
    )
    sub = command(
        consents,
        "list",
        lambda api, a: api.request("GET", _consent_filters(a)),
        CONSENT_COLUMNS,
        many=True,
    )
    sub.add_argument("--login", metavar="LOGIN")
    sub.add_argument("--client", metavar="CLIENT_ID")
    sub = command(
        consents,
        "revoke",
        oauth_consents_revoke,
        [("REVOKED", "revoked")],
        help_text="the client asks the user again (issued tokens keep running until they expire)",
    )
    sub.add_argument("--login", metavar="LOGIN")
    sub.add_argument("--client", metavar="CLIENT_ID")
    sub.add_argument("--id", metavar="CONSENT_ID")

    auth = proxy.add_parser("auth", help="OAuth protection of a proxy").add_subparsers(
        dest="auth_action", required=True
    )
    sub = command(auth, "set", auth_set, [], help_text="protect a proxy (replaces its auth settings)")
    sub.add_argument("hostname")
    sub.add_argument("--allow-user", action="append", metavar="LOGIN", help="GitHub login, or '*' for anyone")
    sub.add_argument("--allow-org", action="append", metavar="ORG", help="GitHub organisation")
    sub.add_argument("--scope", action="append", metavar="SCOPE", help="required scope (default: mcp)")
    sub.add_argument("--public-path", action="append", metavar="PREFIX", help="path prefix needing no token")
    sub.add_argument(
        "--allow-client",
        action="append",
        metavar="CLIENT_ID",
        help="OAuth client whose client_credentials tokens (no user) are allowed",
    )
    sub.add_argument(
        "--allow-origin",
        action="append",
        metavar="ORIGIN",
        help="browser Origin allowed to call (scheme://host[:port]); default: any",
    )
    sub.add_argument(
        "--identity-header",
        action="append",
        type=_key_value,
        metavar="NAME=FIELD",
        help="header sent upstream: login, sub, email, orgs, scope, client_id or name",
    )
    sub.add_argument("--disabled", action="store_true", help="keep the settings but do not enforce them")
    sub = command(auth, "show", lambda api, a: api.request("GET", _host_path(a.hostname, "auth")), [])
    sub.add_argument("hostname")
    sub = command(auth, "remove", auth_remove, [], help_text="stop protecting a proxy")
    sub.add_argument("hostname")

    resource = proxy.add_parser("resource", help="protected resource metadata of a proxy").add_subparsers(
        dest="resource_action", required=True
    )
    sub = command(resource, "set", resource_set, [], help_text="change only the options given")
    sub.add_argument("hostname")
    sub.add_argument("--path", metavar="PATH", help="resource path, e.g. /mcp ('' for the whole host)")
    sub.add_argument("--scope", action="append", metavar="SCOPE")
    sub.add_argument("--name", metavar="TEXT")
    sub.add_argument("--docs", metavar="URL")
    sub = command(resource, "show", lambda api, a: api.request("GET", _host_path(a.hostname, "resource")), [])
    sub.add_argument("hostname")

    resources = groups.add_parser("resources", help="protected resources").add_subparsers(
        dest="action", required=True
    )
    command(
        resources,
        "list",
        lambda api, a: api.request("GET", "/api/v1/resources/"),
        RESOURCE_COLUMNS,
        many=True,
    )
