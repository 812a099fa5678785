"""CPU time and memory from /proc: per process group (a proxy's master and workers) and for the whole machine.

Sampled around each measured run it answers two questions: how much of its one core the proxy used (100% =
CPU-bound; well below = waiting on the load generator or backend), and how much CPU processes we did NOT start
took meanwhile. On a shared machine the second number says whether a run's figures can be trusted.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def groups_cpu_seconds(pgids: Iterable[int]) -> dict[int, float]:
    """User + system CPU seconds of the live processes of each group (exited children are not counted)."""
    wanted = set(pgids)
    ticks = dict.fromkeys(wanted, 0)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue  # the process exited while we were scanning
        # Fields after the parenthesised command name: state ppid pgrp ... utime(14) stime(15), 1-based.
        fields = stat.rsplit(")", 1)[1].split()
        pgid = int(fields[2])
        if pgid in wanted:
            ticks[pgid] += int(fields[11]) + int(fields[12])
    return {pgid: count / CLOCK_TICKS_PER_SECOND for pgid, count in ticks.items()}


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent in processes (user, nice, system, steal) since boot.

    irq and softirq time are left out: loopback traffic is processed in softirq and the kernel does not charge
    it to the sending or receiving process, so counting it would show our own traffic as "other" load.
    """
    with open("/proc/stat") as handle:
        fields = handle.readline().split()  # the aggregate "cpu" line
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + steal) / CLOCK_TICKS_PER_SECOND


def group_rss_bytes(pgid: int) -> int:
    """Resident memory of the live processes of one group (a proxy's master and workers together)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                if int(handle.read().rsplit(")", 1)[1].split()[2]) != pgid:
                    continue
            with open(f"/proc/{entry}/status") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except (OSError, ValueError, IndexError):
            continue  # the process exited while we were scanning
    return total
