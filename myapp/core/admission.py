"""Admission: at most `WEB_MAX_IN_FLIGHT` requests of a worker are past the gate at once.

A gevent worker accepts up to `GUNICORN_WORKER_CONNECTIONS` connections and would run all
their requests at once. Once its CPU is saturated that helps nobody: every request waits
in the hub's run queue, holds its database connection longer, and the pool's waiters are
woken in no particular order, so some wait seconds while most take milliseconds. The gate
keeps the work in progress small and makes the others wait in arrival order: a freed slot
is handed to the oldest waiter, never taken by a newcomer. A request that waits longer than
`WEB_QUEUE_TIMEOUT` is answered 503 `SERVICE_UNAVAILABLE` (with `Retry-After`) before it
did any work. Probes and scrapes pass the gate without queueing.

Streaming routes pass the gate like any other (opening 1,000 event streams at once must
queue for the database like 1,000 reads), but do not keep their slot while they stream:
a download or an event stream gives it back when the view returns (teardown runs before
the body is sent), and an upload gives it back (`release()`) before it reads its body.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask, current_app, g, request

from myapp.core.config import current_settings
from myapp.core.context import OPERATIONAL_PREFIXES
from myapp.core.errors import AppError

_EXTENSION = "myapp.admission"


class AdmissionGate:
    """A FIFO counting gate: `enter` waits in line, `leave` hands the slot on."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self._waiting: deque[threading.Event] = deque()
        self._lock = threading.Lock()

    def enter(self, timeout: float) -> bool:
        """Take a slot, waiting at most `timeout` seconds; False when the wait timed out."""
        with self._lock:
            if self.active < self.limit and not self._waiting:
                self.active += 1
                return True
            ticket = threading.Event()
            self._waiting.append(ticket)
        if ticket.wait(timeout):
            return True  # `leave` handed its slot over
        with self._lock:
            try:
                self._waiting.remove(ticket)
            except ValueError:
                return True  # handed over just as the wait timed out: the slot is ours
            return False

    def leave(self) -> None:
        """Give the slot to the longest-waiting request, or free it."""
        with self._lock:
            if self._waiting:
                self._waiting.popleft().set()  # `active` is unchanged: the slot moves on
            else:
                self.active -= 1


def init_admission(app: Flask, limit: int) -> None:
    """Give `app` its gate (one per worker process: each process builds its app)."""
    app.extensions[_EXTENSION] = AdmissionGate(limit)


def admission_gate() -> AdmissionGate:
    """The current app's gate."""
    return current_app.extensions[_EXTENSION]


def admit() -> None:
    """Step: wait for a slot in arrival order; 503 once `WEB_QUEUE_TIMEOUT` has passed."""
    if request.path.startswith(OPERATIONAL_PREFIXES):
        return
    if not admission_gate().enter(current_settings().web_queue_timeout):
        raise AppError(
            "SERVICE_UNAVAILABLE",
            "The server is busy; retry shortly.",
            headers={"Retry-After": "1"},
        )
    g.admitted = True


@contextmanager
def admitted(wait: float) -> Iterator[bool]:
    """Hold a slot for the block (work that is not a request: a socket connecting or
    leaving), waiting at most `wait` s in line; yields whether a slot came, and the
    block decides what to do without one."""
    gate = admission_gate()
    entered = gate.enter(wait)
    try:
        yield entered
    finally:
        if entered:
            gate.leave()


def release(_: BaseException | None = None) -> None:
    """Cleanup: the request is done with its slot."""
    if g.pop("admitted", False):
        admission_gate().leave()
