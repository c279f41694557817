"""Shared by the benchmarks: a stdout report logger the app under test leaves alone."""

from __future__ import annotations

import logging
import sys


def report_logger(name: str) -> logging.Logger:
    """A logger printing bare lines to stdout, not propagated to the app's root handler."""
    logger = logging.getLogger(name)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger
