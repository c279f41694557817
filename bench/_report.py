"""Shared by the benchmarks: a stdout report logger the app under test leaves alone, what
they read about a gunicorn process from /proc, and their load-generator processes."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]


def report_logger(name: str) -> logging.Logger:
    """A logger printing bare lines to stdout, not propagated to the app's root handler."""
    logger = logging.getLogger(name)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def child_pids(pid: int) -> set[int]:
    """Child pids of `pid` (none once it is gone)."""
    return {
        int(child)
        for listing in Path(f"/proc/{pid}/task").glob("*/children")
        for child in listing.read_text().split()
    }


def worker_pid(master_pid: int) -> int:
    """The one gunicorn worker: the master's child process."""
    children = child_pids(master_pid)
    if len(children) != 1:
        raise SystemExit(f"expected one gunicorn worker, found {sorted(children)}")
    return children.pop()


def start_load(
    module: str, plan: dict[str, Any], plan_path: Path, log_path: Path
) -> tuple[subprocess.Popen, IO[bytes]]:
    """A load generator `python -m <module> <plan file>`: orders on its stdin, JSON lines on
    its stdout, its stderr in `log_path` (the returned file, to close after it)."""
    plan_path.write_text(json.dumps(plan))
    err = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", module, str(plan_path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
    )
    return process, err


def rss_kib(pid: int) -> int:
    """Resident set size of `pid` (VmRSS), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise SystemExit(f"no VmRSS for pid {pid}")
