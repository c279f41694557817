"""Shared by the benchmarks: a stdout report logger the app under test leaves alone, and
what they read about a gunicorn process from /proc."""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def report_logger(name: str) -> logging.Logger:
    """A logger printing bare lines to stdout, not propagated to the app's root handler."""
    logger = logging.getLogger(name)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def worker_pid(master_pid: int) -> int:
    """The one gunicorn worker: the master's child process."""
    children = [
        int(pid)
        for children_file in Path(f"/proc/{master_pid}/task").glob("*/children")
        for pid in children_file.read_text().split()
    ]
    if len(children) != 1:
        raise SystemExit(f"expected one gunicorn worker, found {children}")
    return children[0]


def rss_kib(pid: int) -> int:
    """Resident set size of `pid` (VmRSS), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise SystemExit(f"no VmRSS for pid {pid}")
