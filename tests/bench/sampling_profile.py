"""Where our data plane spends its time under a workload: py-spy samples the running process from outside
(no instrumentation, a few percent of overhead) for exactly one measured wrk run, and the stacks it writes
(collapsed: `frame;frame;... count`) are summed per function, by own time and including callees.

`just bench --profile-ours DIR` writes DIR/<workload>.txt (the raw stacks, loadable in speedscope or
flamegraph.pl) and DIR/summary.txt (the hottest functions of each workload).
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from pathlib import Path

SAMPLES_PER_SECOND = 250
_LINE = re.compile(r":\d+\)$")


def py_spy() -> str | None:
    """The py-spy executable of this environment (a dev dependency), if installed."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def start_sampling(pid: int, seconds: int, output: Path) -> subprocess.Popen[bytes] | None:
    executable = py_spy()
    if executable is None:
        return None
    output.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        executable,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(seconds),
        "--rate",
        str(SAMPLES_PER_SECOND),
    ]
    argv += ["--format", "raw", "--nonblocking", "--output", str(output)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarise(stacks_path: Path, top: int = 30) -> str:
    """The hottest functions in collapsed stacks: own time, then time including what they call."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in stacks_path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = [_LINE.sub(")", frame) for frame in stack.split(";")]
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    if not total:
        return f"{stacks_path.name}: no samples\n"
    lines = [f"{stacks_path.name}: {total} samples"]
    for title, counter in (("own time", own), ("including callees", inclusive)):
        lines.append(f"  -- {title}")
        lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in counter.most_common(top)]
    return "\n".join(lines) + "\n"
