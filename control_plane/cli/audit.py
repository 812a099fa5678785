"""`mhp logs audit` and `mhp logs oauth`: the change audit and the OAuth audit, newest first.

Both follow the API's `next_cursor` until `--limit` entries are shown (or the trail ends). Tables for people
(time, who, what, and the changed fields or the failure's reason); `--json` prints the entries as the API
returns them. Attach to the `logs` group with `add_audit_log_commands(logs_subparsers, command)`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from . import render
from .client import ApiClient

AUDIT = "/api/v1/logs/audit/"
OAUTH = "/api/v1/logs/oauth/"
PAGE = 200

AUDIT_COLUMNS: list[render.Column] = [
    ("TIME", "time"),
    ("ACTOR", "actor"),
    ("FROM", "client_address"),
    ("ACTION", "action"),
    ("KIND", "kind"),
    ("NAME", "name"),
    ("OWNER", "owner"),
    ("CHANGED", "changed"),
]
OAUTH_COLUMNS: list[render.Column] = [
    ("TIME", "time"),
    ("EVENT", "event"),
    ("OUTCOME", "outcome"),
    ("LOGIN", "login"),
    ("CLIENT", "client_id"),
    ("GRANT", "grant_type"),
    ("RESOURCES", "resources"),
    ("FROM", "client_address"),
    ("REASON", "reason"),
    ("DETAIL", "detail"),
]

Command = Callable[..., argparse.ArgumentParser]


def fetch(api: ApiClient, path: str, filters: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    """Up to `limit` entries, following next_cursor across pages."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while len(items) < limit:
        query = {k: v for k, v in filters.items() if v not in (None, "")}
        query["limit"] = min(PAGE, limit - len(items))
        if cursor:
            query["cursor"] = cursor
        page = api.request("GET", f"{path}?{urlencode(query)}")
        items += page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return items[:limit]


def _time(entry: dict[str, Any]) -> str:
    return datetime.fromtimestamp(float(entry.get("at", 0)), UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _shown(entries: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.json:
        return entries
    out = []
    for entry in entries:
        row = {**entry, "time": _time(entry)}
        if "diff" in entry:
            row["changed"] = ", ".join(sorted(entry["diff"])) or "-"
        out.append(row)
    return out


def audit_log(api: ApiClient, args: argparse.Namespace) -> Any:
    filters = {
        "since": args.since,
        "until": args.until,
        "actor": args.actor,
        "kind": args.kind,
        "name": args.name,
        "action": args.action_filter,
    }
    return _shown(fetch(api, AUDIT, filters, args.limit), args)


def oauth_log(api: ApiClient, args: argparse.Namespace) -> Any:
    filters = {
        "since": args.since,
        "until": args.until,
        "login": args.login,
        "client_id": args.client,
        "event": args.event,
        "outcome": args.outcome,
        "resource": args.resource,
        "client_ip": args.ip,
    }
    return _shown(fetch(api, OAUTH, filters, args.limit), args)


def _time_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", help="oldest entry: an age (15m, 2h, 7d), Unix seconds or ISO 8601")
    parser.add_argument("--until", help="newest entry, same forms as --since")
    parser.add_argument("--limit", type=int, default=50, help="show at most this many entries (default 50)")


def add_audit_log_commands(logs: Any, command: Command) -> None:
    """Add `audit` and `oauth` to the `logs` group's sub-parsers."""
    sub = command(
        logs,
        "audit",
        audit_log,
        AUDIT_COLUMNS,
        many=True,
        help_text="who changed what through the management API (newest first)",
    )
    _time_options(sub)
    sub.add_argument("--actor", help='token name, "admin" or "oauth:<login>"')
    sub.add_argument("--kind", help="token, proxy, route, certificate, auth, service, port, ...")
    sub.add_argument("--name", help="the object's name (hostname, route id, ...)")
    sub.add_argument("--action", dest="action_filter", help="created, updated, deleted, revoked, rotated")
    sub = command(
        logs,
        "oauth",
        oauth_log,
        OAUTH_COLUMNS,
        many=True,
        help_text="sign-ins, consents, tokens issued/refreshed/revoked and refusals (newest first)",
    )
    _time_options(sub)
    sub.add_argument("--login", help="the user's login")
    sub.add_argument("--client", help="the OAuth client id")
    sub.add_argument(
        "--event",
        help=(
            "sign_in, consent_granted, token_issued, token_denied, allowlist_denied, device_authorization, "
            "client_registered, client_metadata_fetched, token_introspected, rate_limited, ..."
        ),
    )
    sub.add_argument("--outcome", choices=["success", "failure"])
    sub.add_argument("--resource", help="a resource URI, e.g. https://mcp.example.com/mcp")
    sub.add_argument("--ip", help="the client's address")
