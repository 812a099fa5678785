"""`mhp` entry point: argparse commands mapped onto the management API.

    mhp tokens create|list|show|update|delete   (--zone delegates a DNS zone)
    mhp proxy  create|list|show|update|delete
    mhp route  create|list|show|update|delete
    mhp cert   create|create-multi|list|show|status|renew|convert-to-production|delete
    mhp service create|list|show|update|delete|start|stop|restart|logs|stats, mhp service external ...
    mhp port   list|check|allocate|release
    mhp workflow list|retry|drop   (workflow_commands.py)
    mhp logs   search|errors|slow|tail [-f]|stats   (log_commands.py), audit|oauth (audit trails: audit.py)
    (mhp oauth ..., mhp proxy auth|resource ... and mhp resources: see auth_commands.py; services and
    ports: service_commands.py)

Output is an aligned table, or the API's JSON with --json. Errors are one line on stderr; exit status 1 for
an API error, 2 for a usage error, 3 when the control plane cannot be reached.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from . import render
from .audit import add_audit_log_commands
from .auth_commands import add_auth_commands
from .client import ApiClient, CliError, resolve_endpoint
from .log_commands import add_log_commands
from .service_commands import add_port_commands, add_service_commands
from .workflow_commands import add_workflow_commands

TOKENS = "/api/v1/tokens/"
GRANTS = ["public-ports", "host-network"]
PROXIES = "/api/v1/proxy/targets/"
ROUTES = "/api/v1/routes/"
CERTIFICATES = "/api/v1/certificates/"

Handler = Callable[[ApiClient, argparse.Namespace], Any]


def _item(collection: str, name: str) -> str:
    return collection + quote(name, safe="*")


def _key_value(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


# ---- tokens ----


def tokens_create(api: ApiClient, args: argparse.Namespace) -> Any:
    body = {
        "name": args.name,
        "cert_email": args.email or "",
        "zones": args.zone or [],
        "grants": args.grant or [],
    }
    created = api.request("POST", TOKENS, body)
    if not args.json:
        render.note("The token is shown once; store it now.")
    return created


def tokens_update(api: ApiClient, args: argparse.Namespace) -> Any:
    body: dict[str, Any] = {}
    if args.email is not None:
        body["cert_email"] = args.email
    if args.zone is not None or args.no_zones:
        body["zones"] = args.zone or []
    if args.grant is not None or args.no_grants:
        body["grants"] = args.grant or []
    if not body:
        raise SystemExit("nothing to change: give --email, --zone, --no-zones, --grant or --no-grants")
    return api.request("PUT", _item(TOKENS, args.name), body)


# ---- proxies ----


def _proxy_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Only the options the user gave, as ProxyTargetSettings fields."""
    out: dict[str, Any] = {}
    flags = {
        "enabled": args.enabled,
        "enable_http": args.http,
        "enable_https": args.https,
        "redirect_http_to_https": args.redirect_https,
        "hsts_max_age_seconds": args.hsts,
        "preserve_host_header": args.preserve_host,
        "verify_upstream_tls": args.verify_tls,
        "connect_timeout_seconds": args.connect_timeout,
        "read_timeout_seconds": args.read_timeout,
        "max_request_body_bytes": args.max_body_bytes,
        "route_mode": args.route_mode,
        "enabled_route_ids": args.enable_route,
        "disabled_route_ids": args.disable_route,
        "request_headers_remove": args.remove_request_header,
        "response_headers_remove": args.remove_response_header,
    }
    out.update({k: v for k, v in flags.items() if v is not None})
    if args.set_request_header is not None:
        out["request_headers_set"] = dict(args.set_request_header)
    if args.set_response_header is not None:
        out["response_headers_set"] = dict(args.set_response_header)
    if args.ca_bundle is not None:
        out["upstream_ca_bundle_pem"] = Path(args.ca_bundle).read_text() if args.ca_bundle else None
    if getattr(args, "target_url", None) is not None:
        out["target_url"] = args.target_url
    return out


def proxy_create(api: ApiClient, args: argparse.Namespace) -> Any:
    return api.request("POST", PROXIES, {"hostname": args.hostname, **_proxy_settings(args)})


def proxy_update(api: ApiClient, args: argparse.Namespace) -> Any:
    changes = _proxy_settings(args)
    if not changes:
        raise CliError("nothing to update: give at least one option (see mhp proxy update --help)")
    return api.request("PATCH", _item(PROXIES, args.hostname), changes)


def _add_proxy_options(parser: argparse.ArgumentParser) -> None:
    bool_opt = argparse.BooleanOptionalAction
    parser.add_argument("--enabled", action=bool_opt, default=None, help="serve this hostname (default yes)")
    parser.add_argument("--http", action=bool_opt, default=None, help="answer on plain HTTP")
    parser.add_argument("--https", action=bool_opt, default=None, help="answer on HTTPS")
    parser.add_argument(
        "--redirect-https",
        action=bool_opt,
        default=None,
        help="308 plain-HTTP requests to https:// once a certificate is live (default yes)",
    )
    parser.add_argument(
        "--hsts", metavar="SECONDS", type=int, help="Strict-Transport-Security max-age on HTTPS (0 = off)"
    )
    parser.add_argument(
        "--preserve-host", action=bool_opt, default=None, help="send the client's Host upstream"
    )
    parser.add_argument(
        "--verify-tls", action=bool_opt, default=None, help="verify the upstream's certificate"
    )
    parser.add_argument("--ca-bundle", metavar="FILE", help="PEM CA bundle for the upstream ('' to clear)")
    parser.add_argument("--set-request-header", metavar="NAME=VALUE", type=_key_value, action="append")
    parser.add_argument("--remove-request-header", metavar="NAME", action="append")
    parser.add_argument("--set-response-header", metavar="NAME=VALUE", type=_key_value, action="append")
    parser.add_argument("--remove-response-header", metavar="NAME", action="append")
    parser.add_argument("--connect-timeout", metavar="SECONDS", type=float)
    parser.add_argument("--read-timeout", metavar="SECONDS", type=float)
    parser.add_argument("--max-body-bytes", metavar="BYTES", type=int)
    parser.add_argument("--route-mode", choices=["all", "selective", "none"])
    parser.add_argument(
        "--enable-route", metavar="ROUTE_ID", action="append", help="for route mode selective"
    )
    parser.add_argument("--disable-route", metavar="ROUTE_ID", action="append", help="for route mode all")


# ---- routes ----

ROUTE_SETTABLE = (
    "path_pattern",
    "match",
    "methods",
    "priority",
    "target_url",
    "target_proxy",
    "scope",
    "proxy_hostnames",
    "enabled",
    "description",
)


def _route_settings(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if getattr(args, "path", None) is not None:
        out["path_pattern"] = args.path
    if args.regex is not None:
        out["match"] = "regex" if args.regex else "prefix"
    if args.method is not None:
        out["methods"] = args.method
    if args.priority is not None:
        out["priority"] = args.priority
    if args.to_url is not None:
        out.update(target_url=args.to_url, target_proxy=None)
    if args.to_proxy is not None:
        out.update(target_proxy=args.to_proxy, target_url=None)
    if args.proxy is not None:
        out.update(scope="proxies", proxy_hostnames=args.proxy)
    if args.is_global:
        out.update(scope="global", proxy_hostnames=[])
    if args.enabled is not None:
        out["enabled"] = args.enabled
    if args.description is not None:
        out["description"] = args.description
    return out


def route_create(api: ApiClient, args: argparse.Namespace) -> Any:
    body = _route_settings(args)
    if args.id:
        body["id"] = args.id
    return api.request("POST", ROUTES, body)


def route_update(api: ApiClient, args: argparse.Namespace) -> Any:
    changes = _route_settings(args)
    if not changes:
        raise CliError("nothing to update: give at least one option (see mhp route update --help)")
    # The API replaces a route whole (PUT); read it, apply the changes, write it back.
    current, etag = api.read(_item(ROUTES, args.id))
    body = {k: current[k] for k in ROUTE_SETTABLE if k in current}
    body.update(changes)
    return api.request("PUT", _item(ROUTES, args.id), body, if_match=etag)


def _add_route_options(parser: argparse.ArgumentParser, *, create: bool) -> None:
    target = parser.add_mutually_exclusive_group(required=create)
    target.add_argument("--to-url", metavar="URL", help="send matching requests to this URL")
    target.add_argument(
        "--to-proxy", metavar="HOSTNAME", help="send matching requests to this proxy's target"
    )
    parser.add_argument(
        "--regex",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="PATH is a regular expression (default: a prefix)",
    )
    parser.add_argument(
        "--method", metavar="METHOD", action="append", help="repeatable; default: every method"
    )
    parser.add_argument(
        "--priority", type=int, metavar="0-999", help="higher is evaluated first (default 500)"
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--proxy", metavar="HOSTNAME", action="append", help="apply only to this proxy (repeatable)"
    )
    scope.add_argument("--global", dest="is_global", action="store_true", help="apply to every proxy")
    parser.add_argument("--enabled", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--description")


# ---- certificates ----


def _certificate_body(args: argparse.Namespace, domains: list[str]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "cert_name": args.name,
        "domains": domains,
        "environment": "staging" if args.staging else "production",
    }
    if args.email is not None:
        body["email"] = args.email
    return body


def cert_create(api: ApiClient, args: argparse.Namespace) -> Any:
    return api.request("POST", CERTIFICATES, _certificate_body(args, [args.domain]))


def cert_create_multi(api: ApiClient, args: argparse.Namespace) -> Any:
    return api.request("POST", CERTIFICATES, _certificate_body(args, args.domains))


def _add_certificate_commands(groups: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    cert = groups.add_parser("cert", help="ACME certificates").add_subparsers(dest="action", required=True)
    for name, handler, help_text in (
        ("create", cert_create, "request a certificate for one domain (issued in the background)"),
        ("create-multi", cert_create_multi, "request one certificate for several domains"),
    ):
        sub = command(cert, name, handler, render.CERT_COLUMNS, help_text=help_text)
        sub.add_argument("name", help="certificate name")
        if name == "create":
            sub.add_argument("domain")
        else:
            sub.add_argument("domains", nargs="+", metavar="DOMAIN")
        sub.add_argument("--email", help="ACME contact (default: the token's cert email, then ACME_EMAIL)")
        sub.add_argument("--staging", action="store_true", help="use the staging CA (untrusted test certs)")
    command(cert, "list", lambda api, a: api.request("GET", CERTIFICATES), render.CERT_COLUMNS, many=True)
    item_commands: list[tuple[str, str, str, list[render.Column], str]] = [
        ("show", "GET", "", [], "metadata (never the private key)"),
        ("status", "GET", "/status", render.CERT_STATUS_COLUMNS, "issuance status and last error"),
        ("renew", "POST", "/renew", render.CERT_COLUMNS, "issue a new certificate now"),
        (
            "convert-to-production",
            "POST",
            "/convert-to-production",
            render.CERT_COLUMNS,
            "re-issue a staging certificate from the production CA",
        ),
        ("delete", "DELETE", "", [], "delete the certificate"),
    ]
    for action, method, suffix, columns, help_text in item_commands:
        sub = command(
            cert,
            action,
            lambda api, a, m=method, s=suffix: api.request(m, _item(CERTIFICATES, a.name) + s),
            columns,
            help_text=help_text,
        )
        sub.add_argument("name")


# ---- parser ----


def _add_common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # Accepted before or after the command; sub-parsers must not reset what the top level parsed.
    default = None if top else argparse.SUPPRESS
    parser.add_argument(
        "--json",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="print the API's JSON instead of a table",
    )
    parser.add_argument(
        "--url", default=default, help="API base URL (default: MHP_API_URL or 127.0.0.1:API_PORT)"
    )
    parser.add_argument(
        "--token", default=default, help="bearer token (default: MHP_TOKEN, else ADMIN_TOKEN)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mhp", description="Manage mcp-http-proxy through its REST API.")
    _add_common(parser, top=True)
    groups = parser.add_subparsers(
        dest="group",
        required=True,
        metavar="{tokens,proxy,route,cert,oauth,resources,service,port,workflow,logs}",
    )

    def command(
        group: Any,
        name: str,
        handler: Handler,
        columns: list[render.Column],
        *,
        many: bool = False,
        help_text: str = "",
    ) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = group.add_parser(name, help=help_text)
        _add_common(sub, top=False)
        sub.set_defaults(handler=handler, columns=columns, many=many)
        return sub

    tokens = groups.add_parser("tokens", help="API tokens").add_subparsers(dest="action", required=True)
    sub = command(
        tokens,
        "create",
        tokens_create,
        [*render.TOKEN_COLUMNS, ("TOKEN", "token")],
        help_text="create a token (admin only); prints it once",
    )
    sub.add_argument("name")
    sub.add_argument("--email", help="certificate contact email")
    sub.add_argument(
        "--zone",
        action="append",
        help="DNS zone delegated to the token (repeatable): it may create names and wildcards only under it",
    )
    sub.add_argument(
        "--grant", action="append", choices=GRANTS, help="public-ports, host-network (repeatable)"
    )
    command(tokens, "list", lambda api, a: api.request("GET", TOKENS), render.TOKEN_COLUMNS, many=True)
    sub = command(
        tokens, "show", lambda api, a: api.request("GET", _item(TOKENS, a.name)), render.TOKEN_COLUMNS
    )
    sub.add_argument("name")
    sub = command(
        tokens, "update", tokens_update, render.TOKEN_COLUMNS, help_text="change the cert email or zones"
    )
    sub.add_argument("name")
    sub.add_argument("--email")
    sub.add_argument("--zone", action="append", help="replace the delegated zones (repeatable; admin only)")
    sub.add_argument("--no-zones", action="store_true", help="remove every delegated zone (admin only)")
    sub.add_argument(
        "--grant", action="append", choices=GRANTS, help="replace the grants (repeatable; admin only)"
    )
    sub.add_argument("--no-grants", action="store_true", help="remove every grant (admin only)")
    sub = command(
        tokens,
        "delete",
        lambda api, a: api.request("DELETE", _item(TOKENS, a.name)),
        [],
        help_text="delete a token and everything it owns",
    )
    sub.add_argument("name")

    proxy = groups.add_parser("proxy", help="proxy targets").add_subparsers(dest="action", required=True)
    sub = command(proxy, "create", proxy_create, render.PROXY_COLUMNS)
    sub.add_argument("hostname")
    sub.add_argument("target_url")
    _add_proxy_options(sub)
    command(proxy, "list", lambda api, a: api.request("GET", PROXIES), render.PROXY_COLUMNS, many=True)
    sub = command(proxy, "show", lambda api, a: api.request("GET", _item(PROXIES, a.hostname)), [])
    sub.add_argument("hostname")
    sub = command(proxy, "update", proxy_update, [], help_text="change only the options given")
    sub.add_argument("hostname")
    sub.add_argument("--target-url", metavar="URL")
    _add_proxy_options(sub)
    sub = command(proxy, "delete", lambda api, a: api.request("DELETE", _item(PROXIES, a.hostname)), [])
    sub.add_argument("hostname")

    route = groups.add_parser("route", help="routes").add_subparsers(dest="action", required=True)
    sub = command(route, "create", route_create, render.ROUTE_COLUMNS)
    sub.add_argument("path", metavar="PATH", help="path prefix (or regex with --regex)")
    sub.add_argument("--id", help="route id (generated when omitted)")
    _add_route_options(sub, create=True)
    command(route, "list", lambda api, a: api.request("GET", ROUTES), render.ROUTE_COLUMNS, many=True)
    sub = command(route, "show", lambda api, a: api.request("GET", _item(ROUTES, a.id)), [])
    sub.add_argument("id")
    sub = command(route, "update", route_update, [], help_text="change only the options given")
    sub.add_argument("id")
    sub.add_argument("--path", metavar="PATH")
    _add_route_options(sub, create=False)
    sub = command(route, "delete", lambda api, a: api.request("DELETE", _item(ROUTES, a.id)), [])
    sub.add_argument("id")
    _add_certificate_commands(groups, command)
    add_auth_commands(groups, proxy, command)
    add_service_commands(groups, command)
    add_port_commands(groups, command)
    add_workflow_commands(groups, command)
    # `mhp logs ...`: request logs; the audit trails (oauth, audit) register into the same group.
    add_audit_log_commands(add_log_commands(groups, command), command)
    return parser


def _show(result: Any, args: argparse.Namespace) -> None:
    if getattr(args, "printed", False):
        return  # the command wrote its own output (service logs)
    if result is None:
        if not args.json:
            nouns = {"tokens": "token", "cert": "certificate", "oauth": "OAuth client", "port": "port"}
            noun = nouns.get(args.group, args.group)
            target = next(
                (
                    getattr(args, field)
                    for field in ("name", "hostname", "id", "client_id", "port")
                    if getattr(args, field, None)
                ),
                "",
            )
            render.note(f"deleted {noun} {target}")
        return
    if args.json:
        render.print_json(result)
    elif args.many:
        render.print_table(result, args.columns)
    elif args.columns:
        render.print_table([result], args.columns)
    else:
        render.print_object(result)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        endpoint = resolve_endpoint(args.url, args.token)
        with ApiClient(endpoint) as api:
            result = args.handler(api, args)
        _show(result, args)
    except CliError as exc:
        print(f"mhp: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # e.g. an unreadable --ca-bundle file
        print(f"mhp: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
