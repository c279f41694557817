"""Running CMD as a child process, and the signal handling around it.

SIGINT/SIGTERM are forwarded to the child (Ctrl-C only when the terminal did not already
deliver it), and ignored while the started servers are being stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from types import FrameType

from .base import log


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """Ignore SIGINT and SIGTERM for the duration of the ``with`` block."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _terminal_delivers_sigint() -> bool:
    """Whether we (and so the child) are the foreground process group of our terminal.

    Then Ctrl-C has already been delivered by the terminal to the child as well.
    """
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(fd)


def run_child(command: list[str]) -> int:
    """Run ``command``, forwarding SIGINT/SIGTERM to it; return a shell-style exit status."""
    child: subprocess.Popen[bytes] | None = None
    pending: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGINT and _terminal_delivers_sigint():
            return  # the terminal sent Ctrl-C to the child too; do not send it twice
        if child is None:
            pending.append(signum)
        elif child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            child = subprocess.Popen(command)  # noqa: S603 - running CMD is our job
        except OSError as exc:
            log.error("cannot run %r: %s", command[0], exc)
            return 127  # what a shell returns for a command it cannot run
        for signum in pending:
            child.send_signal(signum)
        returncode = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - returncode if returncode < 0 else returncode
