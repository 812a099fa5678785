"""`mhp workflow list|retry|drop`: the control plane's Redis-Streams workflows (admin only).

mhp workflow list [--workflow acme|services] [--limit N]   counts per workflow, then one row per item
mhp workflow retry WORKFLOW ITEM                           queue it again (a new event)
mhp workflow drop WORKFLOW ITEM                            remove it for good
"""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

from . import render
from .client import ApiClient

WORKFLOWS = "/api/v1/workflows/"
MAX_ERROR_CHARS = 100

SUMMARY_COLUMNS: list[render.Column] = [
    ("WORKFLOW", "workflow"),
    ("PENDING", "counts.pending"),
    ("IN FLIGHT", "counts.in_flight"),
    ("FAILED", "counts.failed"),
    ("DEAD", "counts.dead"),
    ("CONSUMERS", "consumer_names"),
]
ITEM_COLUMNS: list[render.Column] = [
    ("WORKFLOW", "workflow"),
    ("ITEM", "item"),
    ("STATE", "state"),
    ("EVENT", "summary"),
    ("CONSUMER", "consumer"),
    ("DELIVERIES", "deliveries"),
    ("ATTEMPTS", "attempts"),
    ("SINCE", "since_at"),
    ("ERROR", "short_error"),
]
ACTION_COLUMNS: list[render.Column] = [
    ("WORKFLOW", "workflow"),
    ("ITEM", "item"),
    ("ACTION", "action"),
    ("NEW ITEM", "new_item"),
]


def _item_path(args: argparse.Namespace, suffix: str = "") -> str:
    return f"{WORKFLOWS}{quote(args.workflow, safe='')}/{quote(args.item, safe=':')}{suffix}"


def _rows(views: list[dict[str, Any]], only: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    summary, items = [], []
    for view in views:
        if only and view["workflow"] != only:
            continue
        names = [consumer["name"] for consumer in view["consumers"]]
        summary.append({**view, "consumer_names": ", ".join(names) or "-"})
        for state in ("pending", "in_flight", "failed", "dead"):
            for item in view[state]:
                event = item.get("event") or {}
                error = str(item.get("error") or "")
                items.append(
                    {
                        **item,
                        "workflow": view["workflow"],
                        "summary": " ".join(
                            f"{k}={v}" for k, v in event.items() if v and k not in ("at", "schema_version")
                        )
                        or item["item"].partition(":")[2],
                        "since_at": item.get("delivered_at")
                        or item.get("failed_at")
                        or item.get("enqueued_at"),
                        "short_error": error
                        if len(error) <= MAX_ERROR_CHARS
                        else error[: MAX_ERROR_CHARS - 3] + "...",
                    }
                )
    return summary, items


def workflow_list(api: ApiClient, args: argparse.Namespace) -> Any:
    views = api.request("GET", f"{WORKFLOWS}?limit={args.limit}")
    if args.json:
        return [view for view in views if not args.workflow or view["workflow"] == args.workflow]
    summary, items = _rows(views, args.workflow)
    render.print_table(summary, SUMMARY_COLUMNS)
    if items:
        print()
        render.print_table(items, ITEM_COLUMNS)
    args.printed = True
    return None


def add_workflow_commands(groups: Any, command: Any) -> None:
    workflow = groups.add_parser("workflow", help="ACME and service workflows (admin)").add_subparsers(
        dest="action", required=True
    )
    sub = command(
        workflow,
        "list",
        workflow_list,
        [],
        help_text="pending, in-flight, failed and dead-lettered items of every workflow",
    )
    sub.add_argument("--workflow", choices=["acme", "services"], help="only this workflow")
    sub.add_argument("--limit", type=int, default=100, help="items per list and state (1-1000)")
    sub = command(
        workflow,
        "retry",
        lambda api, a: api.request("POST", _item_path(a, "/retry")),
        ACTION_COLUMNS,
        help_text="queue an in-flight, failed or dead-lettered item again (a failed certificate: renew now)",
    )
    sub.add_argument("workflow", help="acme or services")
    sub.add_argument(
        "item", help="an ITEM of `mhp workflow list` (stream id, dead:ID, certificate:NAME, ...)"
    )
    sub = command(
        workflow,
        "drop",
        lambda api, a: api.request("DELETE", _item_path(a)),
        ACTION_COLUMNS,
        help_text="remove a queued, in-flight, failed or dead-lettered item for good",
    )
    sub.add_argument("workflow", help="acme or services")
    sub.add_argument("item")
