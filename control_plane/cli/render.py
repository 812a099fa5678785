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
    ("GRANTS", "grants"),
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


SERVICE_COLUMNS: list[Column] = [
    ("NAME", "name"),
    ("IMAGE", "image_or_build"),
    ("STATE", "status.state"),
    ("WANTED", "desired_state"),
    ("GEN", "generation"),
    ("PORTS", "ports"),
    ("PROXY", "auto_proxy"),
    ("OWNER", "owner"),
    ("ERROR", "status.error"),
]
SERVICE_DETAIL_COLUMNS: list[Column] = [
    *SERVICE_COLUMNS[:6],
    ("ENDPOINT", "endpoint"),
    ("CONTAINER", "status.container_name"),
    ("RESTARTS", "status.restart_count"),
    ("HEALTH", "status.health"),
    ("OOM", "status.oom_killed"),
    ("EXIT", "status.exit_code"),
    *SERVICE_COLUMNS[6:],
]
STATS_COLUMNS: list[Column] = [
    ("NAME", "name"),
    ("STATE", "state"),
    ("CPU %", "cpu_percent"),
    ("MEMORY", "memory"),
    ("MEM %", "memory_percent"),
    ("NET RX/TX", "network"),
    ("BLOCK R/W", "block"),
    ("PIDS", "pids"),
    ("RESTARTS", "restarts"),
    ("OOM", "oom_killed"),
]
EXTERNAL_SERVICE_COLUMNS: list[Column] = [
    ("NAME", "name"),
    ("URL", "url"),
    ("OWNER", "owner"),
    ("DESCRIPTION", "description"),
]
PORT_COLUMNS: list[Column] = [
    ("PORT", "port"),
    ("PROTO", "protocol"),
    ("BIND", "bind"),
    ("OWNER", "owner"),
    ("SERVICE", "service"),
    ("PURPOSE", "purpose"),
]
PORT_CHECK_COLUMNS: list[Column] = [
    ("PORT", "port"),
    ("PROTO", "protocol"),
    ("AVAILABLE", "available"),
    ("REASON", "reason"),
]


def human_bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}GiB"


def _lookup(row: dict[str, Any], field: str) -> Any:
    value: Any = row
    for part in field.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _derived(row: dict[str, Any], field: str) -> str | None:
    """Cells computed from several fields (services and their stats)."""
    if field == "image_or_build":
        build = row.get("build")
        return str(row.get("image") or (f"build:{build['context']}" if isinstance(build, dict) else "-"))
    if field == "ports" and isinstance(row.get("ports"), list):
        return (
            ", ".join(
                f"{p['name']} {p['bind']}:{p['host_port']}->{p['container_port']}/{p['protocol']}"
                for p in row["ports"]
            )
            or "-"
        )
    if field == "memory" and "memory_used_bytes" in row:
        return f"{human_bytes(row['memory_used_bytes'])} / {human_bytes(row['memory_limit_bytes'])}"
    if field == "network" and "network_rx_bytes" in row:
        return f"{human_bytes(row['network_rx_bytes'])} / {human_bytes(row['network_tx_bytes'])}"
    if field == "block" and "block_read_bytes" in row:
        return f"{human_bytes(row['block_read_bytes'])} / {human_bytes(row['block_write_bytes'])}"
    return None


def _cell(row: dict[str, Any], field: str) -> Text:
    # Text, not str: user data such as a regex `[a-z]` or a description must never be read as rich markup.
    return Text(_format(row, field))


def _format(row: dict[str, Any], field: str) -> str:
    if field == "target":
        return str(row.get("target_url") or f"proxy:{row.get('target_proxy')}")
    derived = _derived(row, field)
    if derived is not None:
        return derived
    value = _lookup(row, field)
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


def print_rich_table(table: Table) -> None:
    """Print a table a command built itself (`mhp logs`: columns and styles depend on the rows)."""
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
