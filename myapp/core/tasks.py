"""Celery wiring: one factory for web and workers, app-context tasks, request-id propagation.

Tasks are declared with `@shared_task` in each domain's `tasks.py`; they run inside an
application context, with the request id of the request that queued them bound to every
log line and SQL statement. Delivery is at-least-once (`acks_late`, redelivery when a
worker dies), so handlers must be idempotent. Periodic jobs are declared in
`PERIODIC_JOBS` only; beat runs them through RedBeat, whose Redis lock keeps a single
active scheduler even while two beat pods overlap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from celery import Celery, Task, signals
from celery.schedules import crontab, schedule
from flask import Flask, current_app
from kombu import Queue

from myapp.core.context import (
    SYSTEM,
    bind_actor,
    bind_request_id,
    clear_context,
    current_request_id,
    new_request_id,
)
from myapp.settings import Settings

QUEUES = ("default", "chat", "low")
_EXTENSION = "myapp.celery"
REQUEST_ID_HEADER = "request_id"


@dataclass(frozen=True, slots=True)
class PeriodicJob:
    """A task beat runs on a schedule."""

    name: str
    task: str
    schedule: schedule | crontab | float
    queue: str = "low"


#: Every periodic job of the application, in one list (domains add theirs here).
PERIODIC_JOBS: list[PeriodicJob] = []


def broker_queue_key(prefix: str, queue: str) -> str:
    """The Redis list holding a queue's pending messages."""
    return f"{prefix}celery:{queue}"


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings derived from ours."""
    keyprefix = {"global_keyprefix": f"{settings.redis_prefix}celery:"}
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.broker_url,
        "broker_transport_options": {**keyprefix, "visibility_timeout": 3600},
        "result_backend_transport_options": keyprefix,
        "broker_connection_retry_on_startup": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": "default",
        "task_queues": [Queue(name) for name in QUEUES],
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_expires": 86_400,
        "task_ignore_result": True,
        # The pool is chosen with `--pool` on the command line (Procfile, entrypoint), where
        # Celery patches early enough; `worker_pool` here would be too late for gevent.
        "worker_concurrency": settings.celery_concurrency,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "redbeat_redis_url": settings.broker_url,
        "redbeat_key_prefix": f"{settings.redis_prefix}redbeat:",
        "redbeat_redis_options": {
            "retry_period": 60,
            "socket_timeout": settings.redis_socket_timeout,
            "socket_connect_timeout": settings.redis_connect_timeout,
            "health_check_interval": settings.redis_health_check_interval,
        },
        "redbeat_lock_timeout": 300,
        "beat_max_loop_interval": 60,
        "beat_schedule": {
            job.name: {"task": job.task, "schedule": job.schedule, "options": {"queue": job.queue}}
            for job in PERIODIC_JOBS
        },
    }


def init_celery(app: Flask, settings: Settings) -> Celery:
    """Create the Celery app bound to `app` (read it back with `celery_app()`)."""

    class AppContextTask(Task):
        """Runs every task inside the Flask application context."""

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            with app.app_context():
                return super().__call__(*args, **kwargs)

    celery = Celery(app.import_name, task_cls=AppContextTask)
    celery.conf.update(celery_config(settings))
    celery.set_default()
    app.extensions[_EXTENSION] = celery
    _connect_signals()
    return celery


def celery_app(app: Flask | None = None) -> Celery:
    """The Celery app of `app` (default: the current app)."""
    return (app or current_app).extensions[_EXTENSION]


def _connect_signals() -> None:
    signals.before_task_publish.connect(_add_request_id_header, weak=False, dispatch_uid="rid")
    signals.task_prerun.connect(_bind_task_context, weak=False, dispatch_uid="rid-bind")
    signals.task_postrun.connect(_clear_task_context, weak=False, dispatch_uid="rid-clear")
    signals.setup_logging.connect(_keep_our_logging, weak=False, dispatch_uid="logging")


def _add_request_id_header(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """The request id travels with the message (headers survive retries)."""
    if headers is not None:
        headers.setdefault(REQUEST_ID_HEADER, current_request_id() or new_request_id())


def _bind_task_context(task: Task | None = None, **_: Any) -> None:
    request_id = getattr(task.request, REQUEST_ID_HEADER, None) if task else None
    bind_request_id(request_id or new_request_id())
    bind_actor(SYSTEM)


def _clear_task_context(**_: Any) -> None:
    clear_context()


def _keep_our_logging(**_: Any) -> None:
    """Connected so Celery does not install its own handlers; the app configured logging."""
