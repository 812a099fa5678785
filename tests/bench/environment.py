"""Describe the machine and the programs a run used, so a saved result says where its numbers came from.

The background sample is taken before anything starts: on a shared machine (CI runners, a laptop with a
browser open) it tells the reader up front that the figures will be disturbed.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import time
from typing import Any

from tests.bench.our_data_plane import REPO_ROOT
from tests.bench.process_cpu import machine_busy_seconds
from tests.bench.targets import CorePlan


def _first_line(argv: list[str]) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    text = (result.stdout + result.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def versions(targets: list[str]) -> dict[str, str]:
    found = {
        "nginx": _first_line(["nginx", "-v"]),
        "wrk": _first_line(["wrk", "-v"]),
        "python": sys.version.split()[0],
    }
    if "caddy" in targets:
        found["caddy"] = _first_line(["caddy", "version"])
    if "haproxy" in targets:
        found["haproxy"] = _first_line(["haproxy", "-v"])
    if "ours" in targets:
        found["ours"] = "git " + _first_line(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])
    return found


def background_cpu_percent(sample_seconds: float = 1.0) -> float:
    """Percent of one core the machine's other processes use while we are still idle."""
    before = machine_busy_seconds()
    time.sleep(sample_seconds)
    return 100.0 * (machine_busy_seconds() - before) / sample_seconds


def machine(plan: CorePlan, background_percent: float) -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus_online": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "proxy_core": plan.proxy_core,
        "load_core": plan.load_core,
        "pinning": plan.note,
        "background_cpu_percent_before_run": round(background_percent, 1),
    }
