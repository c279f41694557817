"""Dependency checks and the drain state behind the health routes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text

from myapp.core.errors import UNAVAILABLE_ERRORS
from myapp.core.redis import redis_client
from myapp.core.tasks import queue_depths
from myapp.extensions import db

_draining = threading.Event()


def start_draining() -> None:
    """Called on SIGTERM: readiness fails so the load balancer stops sending traffic."""
    _draining.set()


def is_draining() -> bool:
    """True once shutdown has begun in this process."""
    return _draining.is_set()


@dataclass(slots=True)
class Check:
    """Result of one dependency check."""

    status: str
    latency_ms: float | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def up(self) -> bool:
        """True when the dependency answered."""
        return self.status == "up"


def _timed(probe: Callable[[], dict[str, Any] | None]) -> Check:
    started = time.perf_counter()
    try:
        extra = probe() or {}
    except UNAVAILABLE_ERRORS as error:
        return Check(status="down", error=type(error).__name__)
    return Check("up", round((time.perf_counter() - started) * 1000, 2), extra=extra)


def _ping_database() -> None:
    db.session.execute(text("SELECT 1"))
    db.session.rollback()


def _ping_redis() -> None:
    redis_client().ping()


def _queue_depth() -> dict[str, int]:
    return {"depth": sum(queue_depths().values())}


#: What a web pod needs to serve. Not the broker: writes keep succeeding without it (their
#: events wait in the outbox), so a broker outage must not take every pod out of rotation.
READINESS = ("database", "redis")


def is_ready(checks: dict[str, Check]) -> bool:
    """Everything a web pod needs answered."""
    return all(checks[name].up for name in READINESS)


def check_all() -> dict[str, Check]:
    """Check PostgreSQL, Redis and the Celery broker."""
    return {
        "database": _timed(_ping_database),
        "redis": _timed(_ping_redis),
        "queue": _timed(_queue_depth),
    }


def overall_status(checks: dict[str, Check]) -> str:
    """`ok` when all answer, `down` without the database, else `degraded`."""
    if all(check.up for check in checks.values()):
        return "ok"
    return "down" if not checks["database"].up else "degraded"
