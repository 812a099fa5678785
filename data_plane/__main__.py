"""`python -m data_plane [--workers N]`: run the data plane on uvloop.

With --workers 1 (default) this process serves. With N > 1 it becomes a supervisor: it starts N worker
processes of itself that all bind the same public ports with SO_REUSEPORT, forwards SIGTERM/SIGINT to them,
and exits when they have all stopped (a worker that dies is reported; the supervisor then stops the rest).
Worker i's internal listener (/health, /metrics) is on INTERNAL_PORT + i: each worker's counters are its own,
so a scraper needs one stable target per worker (a shared port would hand it a random worker per scrape).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time

import uvloop
from pydantic import ValidationError

from data_plane.limits import Limits
from data_plane.process import serve
from shared.config import load_settings
from shared.logging_setup import configure_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_plane", description=__doc__)
    parser.add_argument("--workers", type=int, default=1, help="worker processes (SO_REUSEPORT)")
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    try:
        settings = load_settings()
    except ValidationError as exc:
        print(f"data plane: invalid settings: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.LOG_LEVEL, "data-plane")
    limits = Limits.from_settings(settings)
    if args.workers > 1:
        return _supervise(args.workers)
    uvloop.run(serve(settings, limits, reuse_port=args.reuse_port, worker_index=args.worker_index))
    return 0


def _supervise(workers: int) -> int:
    argv = [sys.executable, "-m", "data_plane", "--reuse-port"]
    children = [subprocess.Popen([*argv, "--worker-index", str(index)]) for index in range(workers)]
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    exit_code = 0
    while any(child.poll() is None for child in children):
        for child in children:
            code = child.poll()
            if code is not None and code != 0 and not stopping:
                print(f"data plane: worker {child.pid} exited with {code}; stopping", file=sys.stderr)
                exit_code = 1
                forward(signal.SIGTERM, None)
        time.sleep(0.1)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
