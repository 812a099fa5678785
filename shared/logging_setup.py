"""Logging configuration shared by both planes: one line per record, level from LOG_LEVEL."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str, process_name: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s {process_name} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
