"""CLI output: aligned rich tables for people, or `--json` for scripts (the API's JSON, unchanged)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

Column = tuple[str, str]  # (header, field)

TOKEN_COLUMNS: list[Column] = [
    ("NAME", "name"),
    ("CERT EMAIL", "cert_email"),
    ("ZONES", "zones"),
    ("CREATED BY", "created_by"),
    ("CREATED", "created_at"),
]
PROXY_COLUMNS: list[Column] = [
    ("HOSTNAME", "hostname"),
    ("TARGET", "target_url"),
    ("ENABLED", "enabled"),
    ("HTTP", "enable_http"),
    ("HTTPS", "enable_https"),
    ("REDIRECT", "redirect_http_to_https"),
    ("HSTS", "hsts_max_age_seconds"),
    ("ROUTES", "route_mode"),
    ("OWNER", "owner"),
]
ROUTE_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("PRIORITY", "priority"),
    ("MATCH", "match"),
    ("PATH", "path_pattern"),
    ("METHODS", "methods"),
    ("TARGET", "target"),
    ("SCOPE", "scope"),
    ("ENABLED", "enabled"),
    ("OWNER", "owner"),
]

OAUTH_CLIENT_COLUMNS: list[Column] = [
    ("CLIENT ID", "client_id"),
    ("NAME", "client_name"),
    ("AUTH", "token_endpoint_auth_method"),
    ("REDIRECT URIS", "redirect_uris"),
]

SIGNING_KEY_COLUMNS: list[Column] = [
    ("KID", "kid"),
    ("ACTIVE", "active"),
    ("CREATED", "created_at"),
    ("RETIRES", "retires_at"),
]

CONSENT_COLUMNS: list[Column] = [
    ("ID", "consent_id"),
    ("LOGIN", "login"),
    ("CLIENT", "client_id"),
    ("NAME", "client_name"),
    ("SCOPES", "scopes"),
    ("RESOURCES", "resources"),
    ("EXPIRES", "expires_at"),
]

CERT_COLUMNS: list[Column] = [
    ("NAME", "cert_name"),
    ("DOMAINS", "domains"),
    ("STATUS", "status"),
    ("ENV", "environment"),
    ("EXPIRES", "not_after"),
    ("OWNER", "owner"),
]
CERT_STATUS_COLUMNS: list[Column] = [
    ("NAME", "cert_name"),
    ("STATUS", "status"),
    ("ATTEMPTS", "attempts"),
    ("NEXT RETRY", "next_retry_at"),
    ("ERROR", "error"),
]


def _cell(row: dict[str, Any], field: str) -> Text:
    # Text, not str: user data such as a regex `[a-z]` or a description must never be read as rich markup.
    return Text(_format(row, field))


def _format(row: dict[str, Any], field: str) -> str:
    if field == "target":
        return str(row.get("target_url") or f"proxy:{row.get('target_proxy')}")
    value = row.get(field)
    if (field.endswith("_at") or field in ("not_before", "not_after")) and isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    if field == "methods" and isinstance(value, list):
        return ",".join(value) or "*"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | dict):
        return json.dumps(value) if value else "-"
    return "-" if value in (None, "") else str(value)


def _console() -> Console:
    # A wide virtual terminal keeps tables unwrapped when stdout is a pipe (scripts, tests).
    return Console(file=sys.stdout, width=None if sys.stdout.isatty() else 200, soft_wrap=False)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def print_table(rows: list[dict[str, Any]], columns: list[Column]) -> None:
    table = Table(box=None, show_edge=False, pad_edge=False, header_style="bold")
    for header, _field in columns:
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row, field) for _header, field in columns))
    _console().print(table)


def print_object(obj: dict[str, Any]) -> None:
    table = Table(box=None, show_header=False, show_edge=False, pad_edge=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for field in obj:
        table.add_row(Text(field), _cell(obj, field))
    _console().print(table)


def note(message: str) -> None:
    print(message, file=sys.stderr)
