"""`mhp logs ...`: the data plane's request log (search, errors, slow, tail, stats).

mhp logs search [FILTERS] [--limit N] [--pages N | --all] [--cursor C]
mhp logs errors [FILTERS]            5xx answers and upstream failures
mhp logs slow [FILTERS] [--min-ms N] at least LOG_SLOW_THRESHOLD_SECONDS (or --min-ms)
mhp logs tail [-f] [-n N] [FILTERS]  the last N entries; -f follows new ones live (Ctrl-C stops)
mhp logs stats [--since 1d] [--host H] [--bucket minute|hour|auto] [--top N] [--by-bucket]
FILTERS: --since 15m --until ISO|15m --host H --ip IP --user LOGIN --client-id ID --status 404|4xx
         --method M --path PREFIX --mcp-method M --tool NAME --request-id ID --upstream-error

`add_log_commands` returns the `logs` sub-command group, so other log kinds (`mhp logs oauth`,
`mhp logs audit`) register into the same group next to these.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from rich.table import Table
from rich.text import Text

from . import render
from .client import ApiClient

LOGS = "/api/v1/logs/"
STATS = "/api/v1/logs/stats"
ALL_PROXIES = "(all)"
TAIL = "/api/v1/logs/tail"

Command = Callable[..., argparse.ArgumentParser]

# Filter flag -> API query parameter.
FILTERS = {
    "since": "since",
    "until": "until",
    "host": "host",
    "ip": "client_ip",
    "user": "user",
    "client_id": "client_id",
    "status": "status",
    "method": "method",
    "path": "path_prefix",
    "mcp_method": "mcp_method",
    "tool": "tool",
    "request_id": "request_id",
}
# (header, field); columns every row leaves empty are not shown.
ENTRY_COLUMNS = [
    ("TIME", "time"),
    ("HOST", "host"),
    ("CLIENT", "client_ip"),
    ("USER", "user"),
    ("METHOD", "method"),
    ("PATH", "path"),
    ("STATUS", "status"),
    ("MS", "duration_seconds"),
    ("IN", "bytes_in"),
    ("OUT", "bytes_out"),
    ("TOOL", "mcp_tool"),
    ("ERROR", "upstream_error"),
    ("REQUEST ID", "request_id"),
]
ALWAYS = {"time", "host", "method", "path", "status", "duration_seconds"}


def _params(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    params = {api: getattr(args, flag) for flag, api in FILTERS.items() if getattr(args, flag, None)}
    if getattr(args, "upstream_error", False):
        params["upstream_error"] = "true"
    params.update({k: v for k, v in extra.items() if v is not None})
    return params


def _get(api: ApiClient, path: str, params: dict[str, Any]) -> Any:
    return api.request("GET", f"{path}?{urlencode(params)}" if params else path)


def _status_style(status: int) -> str:
    return "red" if status >= 500 else "yellow" if status >= 400 else "green" if status < 300 else "cyan"


def _cell(entry: dict[str, Any], field: str, *, full_time: bool) -> Text:
    value = entry.get(field)
    if field == "time":
        moment = datetime.fromtimestamp(float(value or 0)).astimezone()
        return Text(
            moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if full_time else moment.strftime("%H:%M:%S.%f")[:-3]
        )
    if field == "status":
        return Text(str(value), style=_status_style(int(value or 0)))
    if field == "duration_seconds":
        return Text(f"{float(value or 0) * 1000:.1f}")
    if field in ("bytes_in", "bytes_out"):
        return Text(render.human_bytes(int(value or 0)))
    return Text("-" if value in (None, "") else str(value))


def print_entries(entries: list[dict[str, Any]]) -> None:
    """A table with the columns that say something: USER, TOOL, ERROR only when some entry has one."""
    if not entries:
        render.note("no matching entries")
        return
    columns = [(h, f) for h, f in ENTRY_COLUMNS if f in ALWAYS or any(e.get(f) for e in entries)]
    days = {datetime.fromtimestamp(float(e["time"])).astimezone().date() for e in entries}
    table = Table(box=None, show_edge=False, pad_edge=False, header_style="bold")
    for header, field in columns:
        table.add_column(
            header,
            overflow="fold",
            justify="right" if field in ("duration_seconds", "bytes_in", "bytes_out") else "left",
        )
    for entry in entries:
        table.add_row(*(_cell(entry, field, full_time=len(days) > 1) for _h, field in columns))
    render.print_rich_table(table)


def _line(entry: dict[str, Any]) -> str:
    """One line per entry for `tail -f` (a table cannot grow)."""
    moment = datetime.fromtimestamp(float(entry["time"])).astimezone().strftime("%H:%M:%S.%f")[:-3]
    user = f" user={entry['user']}" if entry.get("user") else ""
    tool = f" tool={entry['mcp_tool']}" if entry.get("mcp_tool") else ""
    error = f" error={entry['upstream_error']}" if entry.get("upstream_error") else ""
    return (
        f"{moment} {entry['host']} {entry['client_ip']} {entry['method']} {entry['path']} {entry['status']} "
        f"{float(entry['duration_seconds']) * 1000:.1f}ms{user}{tool}{error} id={entry['request_id']}"
    )


def _search(api: ApiClient, args: argparse.Namespace, **extra: Any) -> Any:
    """Pages of entries (newest first) until --limit entries, --pages pages, or the end with --all."""
    params = _params(args, limit=args.limit, cursor=args.cursor, **extra)
    pages = None if args.all else args.pages
    items: list[dict[str, Any]] = []
    last: dict[str, Any] = {}
    number = 0
    while True:
        last = _get(api, LOGS, params)
        items += last["items"]
        number += 1
        if not last["next_cursor"] or (pages is not None and number >= pages):
            break
        params["cursor"] = last["next_cursor"]
    args.printed = True
    if args.json:
        render.print_json({**last, "items": items})
        return None
    print_entries(items)
    if last.get("next_cursor"):
        more = "stopped at the scan budget; " if last.get("partial") else ""
        render.note(f"{more}more with: --cursor {last['next_cursor']}")
    indexer = last.get("indexer") or {}
    if indexer.get("unindexed"):
        render.note(f"{indexer['unindexed']} newest entries not indexed yet (searched in the stream)")
    return None


def logs_search(api: ApiClient, args: argparse.Namespace) -> Any:
    return _search(api, args)


def logs_errors(api: ApiClient, args: argparse.Namespace) -> Any:
    return _search(api, args, errors="true")


def logs_slow(api: ApiClient, args: argparse.Namespace) -> Any:
    if args.min_ms is not None:
        return _search(api, args, min_duration_ms=args.min_ms)
    return _search(api, args, slow="true")


def _sse(chunks: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    buffer = ""
    name, data = "", ""
    for chunk in chunks:
        buffer += chunk
        while "\n" in buffer:
            line, buffer = buffer.split("\n", 1)
            line = line.rstrip("\r")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line == "" and name:
                yield name, json.loads(data)
                name, data = "", ""


def logs_tail(api: ApiClient, args: argparse.Namespace) -> Any:
    args.printed = True
    recent = _get(api, LOGS, _params(args, limit=args.lines))["items"][::-1] if args.lines > 0 else []
    for entry in recent:
        print(json.dumps(entry) if args.json else _line(entry), flush=True)
    if not args.follow:
        if not recent and not args.json and args.lines > 0:
            render.note("no matching entries")
        return None
    params = _params(args)
    params.pop("since", None)
    params.pop("until", None)
    if recent:
        params["after"] = recent[-1]["id"]
    try:
        while True:  # each tail ends after LOG_TAIL_MAX_SECONDS; resume where it ended
            for name, data in _sse(api.stream_text(TAIL, params)):
                if name == "entry":
                    print(json.dumps(data) if args.json else _line(data), flush=True)
                    params["after"] = data["id"]
                elif name == "end":
                    params["after"] = data["resume_after"]
    except KeyboardInterrupt:
        pass
    return None


def logs_stats(api: ApiClient, args: argparse.Namespace) -> Any:
    params = {
        "since": args.since,
        "until": args.until,
        "host": args.host,
        "bucket": args.bucket,
        "top": args.top,
    }
    result = _get(api, STATS, {k: v for k, v in params.items() if v})
    args.printed = True
    if args.json:
        render.print_json(result)
        return None
    if not result["proxies"]:
        render.note("no traffic in this range")
        return None
    table = Table(box=None, show_edge=False, pad_edge=False, header_style="bold")
    headers = [
        "HOST",
        "REQUESTS",
        "2XX",
        "3XX",
        "4XX",
        "5XX",
        "P50 MS",
        "P95 MS",
        "P99 MS",
        "IN",
        "OUT",
        "IPS",
        "USERS",
    ]
    if args.by_bucket:
        headers.insert(1, "BUCKET")
    for header in headers:
        table.add_column(header, justify="left" if header in ("HOST", "BUCKET") else "right")

    def cells(summary: dict[str, Any]) -> list[Text]:
        latency = summary["latency_ms"]
        status = summary["status"]
        return [
            Text(str(summary["requests"])),
            Text(str(status["2xx"])),
            Text(str(status["3xx"])),
            Text(str(status["4xx"]), style="yellow" if status["4xx"] else ""),
            Text(str(status["5xx"]), style="red" if status["5xx"] else ""),
            *(Text("-" if latency[p] is None else f"{latency[p]:.1f}") for p in ("p50", "p95", "p99")),
            Text(render.human_bytes(summary["bytes_in"])),
            Text(render.human_bytes(summary["bytes_out"])),
            Text(str(summary["unique_ips"])),
            Text(str(summary["unique_users"])),
        ]

    if args.by_bucket:
        # The answer's bucket rows: the named proxy's, or (no host) those of every proxy in scope together.
        label = result["proxies"][0]["host"] if args.host else ALL_PROXIES
        for bucket in result["all"]["buckets"]:
            start = datetime.fromtimestamp(bucket["start"]).astimezone().strftime("%m-%d %H:%M")
            table.add_row(Text(label), Text(start), *cells(bucket))
    else:
        for proxy in result["proxies"]:
            table.add_row(Text(proxy["host"]), *cells(proxy["totals"]))
        if len(result["proxies"]) > 1:
            table.add_row(Text(ALL_PROXIES, style="bold"), *cells(result["all"]["totals"]))
    render.print_rich_table(table)
    # Top lists come per proxy for one host; over several, for all of them together.
    sections = [(p["host"], p["totals"]) for p in result["proxies"]] if args.host else []
    for host, totals in sections or [(ALL_PROXIES, result["all"]["totals"])]:
        tops = []
        for label, field in (("paths", "top_paths"), ("users", "top_users"), ("tools", "top_tools")):
            if totals[field]:
                tops.append(
                    f"  top {label}: " + ", ".join(f"{t['value']} ({t['count']})" for t in totals[field])
                )
        if tops:
            print(f"{host}:")
            print("\n".join(tops))
    return None


def _add_filters(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--since", metavar="WHEN", help="15m, 2h, 7d, an ISO time or Unix seconds (default: 1h)")
    sub.add_argument("--until", metavar="WHEN", help="same forms (default: now)")
    sub.add_argument("--host", help="proxy host")
    sub.add_argument("--ip", help="client IP")
    sub.add_argument("--user", help="login or subject")
    sub.add_argument("--client-id", help="OAuth client id")
    sub.add_argument("--status", help="a code (404) or a class (4xx)")
    sub.add_argument("--method", help="HTTP method")
    sub.add_argument("--path", metavar="PREFIX", help="path prefix")
    sub.add_argument("--mcp-method", help="JSON-RPC method, e.g. tools/call")
    sub.add_argument("--tool", help="MCP tool name")
    sub.add_argument("--request-id", help="X-Request-Id of one request")
    sub.add_argument("--upstream-error", action="store_true", help="only requests whose upstream failed")


def _add_paging(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--limit", type=int, default=50, help="entries per page (at most 500; default 50)")
    sub.add_argument("--pages", type=int, default=1, help="pages to fetch (default 1)")
    sub.add_argument("--all", action="store_true", help="every page")
    sub.add_argument("--cursor", help="go on from a previous answer's cursor")


def add_log_commands(groups: Any, command: Command) -> Any:
    """Register `mhp logs`; returns its sub-command group for other log kinds to join."""
    logs = groups.add_parser("logs", help="request logs (search, tail, stats)").add_subparsers(
        dest="action", required=True
    )
    for name, handler, help_text in (
        ("search", logs_search, "request-log entries, newest first"),
        ("errors", logs_errors, "5xx answers and upstream failures"),
        ("slow", logs_slow, "requests slower than LOG_SLOW_THRESHOLD_SECONDS"),
    ):
        sub = command(logs, name, handler, [], help_text=help_text)
        _add_filters(sub)
        _add_paging(sub)
        if name == "slow":
            sub.add_argument("--min-ms", type=float, help="slower than this many milliseconds instead")
        sub.set_defaults(printed=False)
    sub = command(logs, "tail", logs_tail, [], help_text="the last entries; -f follows new ones live")
    sub.add_argument("-f", "--follow", action="store_true", help="keep printing new entries (Ctrl-C stops)")
    sub.add_argument("-n", "--lines", type=int, default=20, help="entries shown first (default 20)")
    _add_filters(sub)
    sub.set_defaults(printed=False)
    sub = command(
        logs, "stats", logs_stats, [], help_text="per-proxy traffic, status, latency, uniques, tops"
    )
    sub.add_argument("--since", metavar="WHEN", help="15m, 2h, 1d, an ISO time or Unix seconds (default: 1h)")
    sub.add_argument("--until", metavar="WHEN")
    sub.add_argument("--host", help="one proxy host")
    sub.add_argument("--bucket", choices=["minute", "hour", "auto"], default="auto")
    sub.add_argument("--top", type=int, default=5, help="entries of each top list")
    sub.add_argument(
        "--by-bucket", action="store_true", help="one row per bucket (of --host, else of all proxies)"
    )
    sub.set_defaults(printed=False)
    return logs
