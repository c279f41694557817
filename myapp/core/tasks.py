"""Celery wiring: one factory for web and workers, and the one base task every task uses.

Tasks are declared with `@shared_task(name=...)` in each domain's `tasks.py`. `BaseTask`
runs them inside an application context with the request id of the request that queued
them bound to every log line, retries transient errors (database, Redis, broker, network)
with exponential backoff, jitter and a cap, enforces soft/hard time limits, and hands a
task that fails for good to the dead-letter table (`myapp.core.deadletters`).

Delivery is at-least-once (`acks_late`, `reject_on_worker_lost`: a message is
acknowledged only after its task finished, so a worker that dies mid-task leaves it to be
delivered again): handlers must be idempotent, keyed by event or job id. Queues and
routing live in `TASK_ROUTES`; periodic jobs in `PERIODIC_JOBS` (RedBeat runs them).
"""

from __future__ import annotations

import contextlib
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from amqp.exceptions import ChannelError
from celery import Celery, Task, signals
from celery.exceptions import Retry
from celery.schedules import crontab, schedule
from flask import Flask, current_app
from kombu import Exchange, Queue
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from myapp.core.blobs import StorageError
from myapp.core.config import current_settings
from myapp.core.context import (
    SYSTEM,
    bind_actor,
    bind_request_id,
    clear_context,
    current_request_id,
    new_request_id,
)
from myapp.core.logging import get_logger, mask_arguments
from myapp.core.metrics import app_counter, app_gauge, app_histogram
from myapp.core.redis import broker_redis, redis_client, redis_key
from myapp.settings import Settings

log = get_logger(__name__)

QUEUES = ("default", "chat", "low")
#: The one routing table: task name (a glob) -> queue. Unlisted tasks go to `default`.
TASK_ROUTES: dict[str, str] = {
    "chat.*": "chat",
    "users.send_welcome_email": "low",
    "maintenance.*": "low",
}
_EXTENSION = "myapp.celery"
REQUEST_ID_HEADER = "request_id"
#: Set on the first retry: when the task first failed (epoch seconds).
FIRST_FAILURE_HEADER = "first_failure_at"
#: Set by `flask dlq replay`: the dead letter this run replays.
DEAD_LETTER_HEADER = "dead_letter_id"
#: Set by beat (`myapp.core.beat`): which tick of which job this message runs.
TICK_HEADER = "tick_id"


def message_header(request: Any, name: str) -> Any:
    """A custom header of the message a task runs (Celery also copies them onto the request)."""
    return (request.headers or {}).get(name) or getattr(request, name, None)


class TransientError(Exception):
    """Raise from a task for a failure worth retrying (a 5xx from a remote service...)."""


#: Errors retried with backoff; anything else fails the task at once (to the dead letters).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TransientError,
    OperationalError,  # PostgreSQL unreachable, restarted, statement timeout
    PoolTimeoutError,  # no pooled connection in time
    RedisConnectionError,
    RedisTimeoutError,
    BrokerError,
    ConnectionError,  # sockets: refused, reset, aborted
    socket.timeout,
    StorageError,  # the blob store (S3) did not answer
)


@dataclass(frozen=True, slots=True)
class PeriodicJob:
    """A task beat runs on a schedule."""

    name: str
    task: str
    schedule: schedule | crontab | float
    queue: str = "low"


def broker_queue_key(prefix: str, queue: str) -> str:
    """The Redis list holding a queue's pending messages (Redis broker)."""
    return f"{prefix}celery:{queue}"


def queue_depths() -> dict[str, int]:
    """Messages waiting in each queue; raises when the broker does not answer."""
    settings = current_settings()
    if settings.broker_is_redis:
        broker = broker_redis()
        pipe = broker.pipeline(transaction=False)
        for queue in QUEUES:
            pipe.llen(broker_queue_key(settings.redis_prefix, queue))
        return dict(zip(QUEUES, pipe.execute(), strict=True))
    depths: dict[str, int] = {}
    with celery_app().connection_for_read() as connection:
        connection.ensure_connection(max_retries=1, timeout=settings.redis_connect_timeout)
        for queue in QUEUES:
            channel = connection.channel()
            try:
                depths[queue] = channel.queue_declare(queue, passive=True).message_count
            except ChannelError:  # not declared yet: no worker ever consumed it
                depths[queue] = 0
            finally:
                with contextlib.suppress(Exception):
                    channel.close()
    return depths


def retry_delay(attempt: int, *, base: float, cap: float) -> float:
    """Seconds before retry number `attempt` (0 = first): exponential, capped, "equal jitter".

    The delay lies in [d/2, d] with d = min(cap, base * 2**attempt): retries of many tasks
    that failed together spread out, and each delay is at least the previous one.
    """
    ceiling = min(cap, base * (2**attempt))
    return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - not for secrets


def celery_config(settings: Settings, jobs: tuple[PeriodicJob, ...] = ()) -> dict[str, Any]:
    """Celery settings derived from ours; `jobs` is the beat schedule."""
    prefix = f"{settings.redis_prefix}celery:"
    if settings.broker_is_redis:
        transport: dict[str, Any] = {
            "global_keyprefix": prefix,
            "visibility_timeout": settings.celery_visibility_timeout,
            # Messages of dead workers come back through `myapp.core.worker`'s sweep.
            "socket_timeout": settings.redis_socket_timeout,
            "socket_connect_timeout": settings.redis_connect_timeout,
        }
    else:
        transport = {"confirm_publish": True}  # a publish returns once RabbitMQ has it
    return {
        "broker_url": settings.broker_url,
        # No result backend: nothing waits for a task's return value (jobs keep their
        # state in PostgreSQL). Under gevent Celery builds a backend per greenlet, which
        # cost a third of a no-op task's time (measured with py-spy).
        "result_backend": None,
        "broker_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,  # a worker waits for its broker to return
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": "default",
        # One direct exchange per queue, bound by the queue's name (Celery would bind all
        # three to the "default" exchange and key: a publish naming them reaches all).
        "task_queues": [
            Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES
        ],
        "task_routes": {pattern: {"queue": queue} for pattern, queue in TASK_ROUTES.items()},
        "task_soft_time_limit": settings.celery_task_soft_time_limit,
        "task_time_limit": settings.celery_task_time_limit,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        # Publishing gives up after ~1 s instead of Celery's default of several seconds:
        # callers (the outbox relay, `flask dlq replay`) keep the work and try again later.
        "task_publish_retry_policy": {
            "max_retries": 2,
            "interval_start": 0.2,
            "interval_step": 0.3,
            "interval_max": 0.5,
        },
        # The pool is chosen with `--pool` on the command line (Procfile, entrypoint), where
        # Celery patches early enough; `worker_pool` here would be too late for gevent.
        "worker_concurrency": settings.celery_concurrency,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        # Monitoring events (Flower) cost one extra broker message per task state.
        "worker_send_task_events": settings.celery_task_events,
        "task_send_sent_event": settings.celery_task_events,
        "redbeat_redis_url": settings.redis_url,
        "redbeat_key_prefix": f"{settings.redis_prefix}redbeat:",
        "redbeat_redis_options": {
            "retry_period": 60,
            "socket_timeout": settings.redis_socket_timeout,
            "socket_connect_timeout": settings.redis_connect_timeout,
            "health_check_interval": settings.redis_health_check_interval,
        },
        # A beat refreshes its lock every loop (at most 5 s apart); a killed one's lock
        # expires after 30 s and the waiting beat takes over: a tick is late by 35 s at most.
        "redbeat_lock_timeout": 30,
        "beat_max_loop_interval": 5,
        # Every `celery beat` uses RedBeat, `-S` or not: Celery's default scheduler keeps its
        # schedule in a local file and takes no lock, so a second beat would send every tick
        # again.
        "beat_scheduler": "myapp.core.beat:Scheduler",
        "beat_schedule": {
            job.name: {"task": job.task, "schedule": job.schedule, "options": {"queue": job.queue}}
            for job in jobs
        },
    }


class BaseTask(Task):
    """Every task: app context, request id, retries with backoff, time limits, dead letters.

    `max_retries`, the backoff base and its cap come from settings; a task may set its own
    as class attributes (`@shared_task(bind=True, max_retries=3)`). `transient_errors`
    lists what is retried.
    """

    acks_late = True
    reject_on_worker_lost = True
    transient_errors: tuple[type[BaseException], ...] = TRANSIENT_ERRORS
    retry_backoff_base: float | None = None
    retry_backoff_cap: float | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task in an app context; retry transient errors while attempts remain."""
        flask_app: Flask = self.app.flask_app
        with flask_app.app_context():
            if not self._first_run_of_its_tick():
                return None
            started = time.perf_counter()
            try:
                result = super().__call__(*args, **kwargs)
            except Retry:
                raise
            except self.transient_errors as error:
                self._retry_or_give_up(error)
                raise
            finally:
                elapsed = time.perf_counter() - started
                _task_metrics_of(self).runtime.labels(self.name).observe(elapsed)
            return result

    def _first_run_of_its_tick(self) -> bool:
        """False for a second message of one beat tick (two beats overlapped); a retry of
        the message that claimed the tick carries the same task id and goes on."""
        tick = message_header(self.request, TICK_HEADER)
        if not tick or self.request.called_directly:
            return True
        key = redis_key("tick", tick)
        client = redis_client()
        if client.set(key, self.request.id, nx=True, ex=86_400):
            return True
        if client.get(key) == self.request.id:
            return True
        log.info("task.tick_already_ran", task=self.name, tick=tick)
        return False

    def _retry_or_give_up(self, error: BaseException) -> None:
        """Raise `Retry` with a backoff countdown while attempts remain (else return)."""
        request = self.request
        if request.called_directly or request.is_eager:
            return
        settings = self.app.flask_settings
        max_retries = (
            self.max_retries if self.max_retries is not None else settings.celery_max_retries
        )
        if request.retries >= max_retries:
            return
        countdown = retry_delay(
            request.retries,
            base=self.retry_backoff_base or settings.celery_retry_backoff,
            cap=self.retry_backoff_cap or settings.celery_retry_backoff_max,
        )
        headers = dict(request.headers or {})
        headers.setdefault(FIRST_FAILURE_HEADER, time.time())
        log.warning(
            "task.retry",
            task=self.name,
            task_id=request.id,
            attempt=request.retries + 1,
            countdown_s=round(countdown, 2),
            error_type=type(error).__name__,
        )
        _task_metrics_of(self).outcomes.labels(self.name, "retried").inc()
        raise self.retry(exc=error, countdown=countdown, max_retries=max_retries, headers=headers)

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        """Failed for good (not retryable, or out of retries): one dead-letter row."""
        _task_metrics_of(self).outcomes.labels(self.name, "failed").inc()
        hook: Callable[..., None] | None = self.app.flask_app.extensions.get(DEAD_LETTER_HOOK)
        if hook is None:
            return
        arguments = {"args": list(args or ()), "kwargs": dict(kwargs or {})}
        try:
            with self.app.flask_app.app_context():
                hook(task=self, task_id=task_id, error=exc, einfo=einfo, **arguments)
        except Exception as error:  # noqa: BLE001 - the database may be what failed
            # Not lost without a trace: this line names the task; its arguments stay out.
            log.error(
                "task.dead_letter_unrecorded",
                task=self.name,
                task_id=task_id,
                error_type=type(exc).__name__,
                recording_error=type(error).__name__,
            )

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        """Count it; a successful replay of a dead letter marks that letter resolved."""
        _task_metrics_of(self).outcomes.labels(self.name, "succeeded").inc()
        dead_letter_id = message_header(self.request, DEAD_LETTER_HEADER)
        hook = self.app.flask_app.extensions.get(REPLAY_SUCCEEDED_HOOK)
        if dead_letter_id and hook is not None:
            with self.app.flask_app.app_context():
                hook(dead_letter_id=dead_letter_id)


#: `app.extensions` keys where `myapp.core.deadletters` plugs in (core modules stay acyclic).
DEAD_LETTER_HOOK = "myapp.dead_letter_hook"
REPLAY_SUCCEEDED_HOOK = "myapp.replay_succeeded_hook"


@dataclass(frozen=True, slots=True)
class TaskMetrics:
    """What workers export about tasks."""

    outcomes: Any
    runtime: Any
    queue_depth: Any  # set by the workers (`myapp.core.worker`)


def task_metrics(app: Flask) -> TaskMetrics:
    """The task metrics of `app`."""
    return app.extensions[_METRICS]


def _task_metrics_of(task: Task) -> TaskMetrics:
    return task.app.flask_app.extensions[_METRICS]


_METRICS = "myapp.task_metrics"


def init_celery(app: Flask, settings: Settings, jobs: tuple[PeriodicJob, ...] = ()) -> Celery:
    """Create the Celery app bound to `app` (read it back with `celery_app()`)."""
    celery = Celery(app.import_name, task_cls=BaseTask)
    celery.conf.update(celery_config(settings, jobs))
    celery.flask_app = app
    celery.flask_settings = settings
    celery.set_default()
    app.extensions[_EXTENSION] = celery
    app.extensions[_METRICS] = TaskMetrics(
        outcomes=app_counter(
            app, "celery_tasks_total", "Task runs by outcome", ("task", "outcome")
        ),
        runtime=app_histogram(
            app,
            "celery_task_runtime_seconds",
            "Task run time",
            ("task",),
            buckets=(0.005, 0.025, 0.1, 0.5, 2.5, 10, 60, 300),
        ),
        queue_depth=app_gauge(
            app,
            "celery_queue_depth",
            "Messages waiting in a queue",
            ("queue",),
            multiprocess_mode="livemax",
        ),
    )
    _connect_signals()
    return celery


def celery_app(app: Flask | None = None) -> Celery:
    """The Celery app of `app` (default: the current app)."""
    return (app or current_app).extensions[_EXTENSION]


def _connect_signals() -> None:
    signals.before_task_publish.connect(_prepare_headers, weak=False, dispatch_uid="rid")
    signals.task_prerun.connect(_bind_task_context, weak=False, dispatch_uid="rid-bind")
    signals.task_postrun.connect(_clear_task_context, weak=False, dispatch_uid="rid-clear")
    signals.setup_logging.connect(_keep_our_logging, weak=False, dispatch_uid="logging")


def _prepare_headers(headers: dict[str, Any] | None = None, body: Any = None, **_: Any) -> None:
    """The request id travels with the message (headers survive retries), and the argument
    reprs Celery shows in worker logs and monitors are masked (personal data stays out)."""
    if headers is None:
        return
    headers.setdefault(REQUEST_ID_HEADER, current_request_id() or new_request_id())
    if isinstance(body, tuple | list) and len(body) >= 2:  # protocol 2: (args, kwargs, embed)
        headers["argsrepr"] = repr(mask_arguments(body[0]))
        headers["kwargsrepr"] = repr(mask_arguments(body[1]))


def _bind_task_context(task: Task | None = None, **_: Any) -> None:
    request_id = getattr(task.request, REQUEST_ID_HEADER, None) if task else None
    bind_request_id(request_id or new_request_id())
    bind_actor(SYSTEM)


def _clear_task_context(**_: Any) -> None:
    clear_context()


def _keep_our_logging(**_: Any) -> None:
    """Connected so Celery does not install its own handlers; the app configured logging."""
