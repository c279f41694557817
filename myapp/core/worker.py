"""What a Celery worker process runs besides its tasks: the outbox relay, a metrics port
with queue depths, (Redis broker) the sweep that brings back messages of workers that
died, and a consumer that comes back soon after its broker does.

`celery_worker.py` calls `prepare_worker(app)`; the hooks fire in the worker's main process
only (never in beat): the loops start when the worker is ready to consume and stop when
its warm shutdown begins.

Why the sweep: on Redis a delivered message waits in an "unacked" set until its task
acknowledges it; if the worker is killed, kombu puts it back once it is older than the
visibility timeout, but only from its event loop. Workers on the gevent pool run without
that loop and never sweep (measured: a message of a SIGKILLed worker stayed lost), so
each worker sweeps itself every `min(10 s, visibility timeout / 4)`.

Why the consumer: after losing its broker, Celery's consumer retries after 2, 4, 6, ...
up to 30 s, so a worker could stay idle for half a minute after the broker is back (the
chat test saw 4 s gaps after a one-second restart). Ours retries every 0.5 s, growing to
at most 2 s.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from celery import signals
from celery.worker.consumer import Consumer as CeleryConsumer
from flask import Flask

from myapp.core.config import current_settings
from myapp.core.logging import get_logger
from myapp.core.metrics import serve_worker_metrics
from myapp.core.outbox import Relay, start_relay_thread
from myapp.core.tasks import celery_app, queue_depths, task_metrics

log = get_logger(__name__)
_QUEUE_DEPTH_SECONDS = 15.0


def sweep_unacked(app: Flask, stopping: threading.Event, interval: float) -> None:
    """Every `interval` s, requeue messages unacknowledged for longer than the visibility
    timeout (their worker died). A Redis mutex lets one worker sweep at a time."""
    while not stopping.wait(interval):
        try:
            with app.app_context(), celery_app().connection_for_write() as connection:
                connection.default_channel.qos.restore_visible(num=1000, interval=1)
        except Exception as error:  # noqa: BLE001 - keep sweeping whatever happened
            log.warning("worker.sweep_failed", error_type=type(error).__name__)


class Consumer(CeleryConsumer):
    """Celery's consumer, retrying a lost broker every 0.5 s growing to 2 s (not 30 s)."""

    def ensure_connected(self, conn: Any) -> Any:
        """Connect as Celery does, with short intervals between attempts."""
        conn.ensure_connection = functools.partial(
            conn.ensure_connection, interval_start=0.5, interval_step=0.5, interval_max=2.0
        )
        return super().ensure_connected(conn)


def measure_queues(app: Flask, stopping: threading.Event, interval: float) -> None:
    """Now and every `interval` s, set `celery_queue_depth{queue}` (messages waiting)."""
    depth = task_metrics(app).queue_depth
    while True:
        try:
            with app.app_context():
                depths = queue_depths()
        except Exception as error:  # noqa: BLE001 - the broker may be down: try again later
            log.warning("worker.queue_depth_failed", error_type=type(error).__name__)
        else:
            for queue, waiting in depths.items():
                depth.labels(queue).set(waiting)
        if stopping.wait(interval):
            return


def prepare_worker(app: Flask) -> None:
    """Connect the worker hooks for `app`, and use our consumer."""
    celery_app(app).conf.worker_consumer = f"{__name__}:Consumer"
    relays: list[Relay] = []
    stopping = threading.Event()

    def on_ready(**_: Any) -> None:
        with app.app_context():
            settings = current_settings()
        if settings.worker_metrics_port:
            serve_worker_metrics(app, settings.worker_metrics_port)
            log.info("worker.metrics_serving", port=settings.worker_metrics_port)
        if settings.outbox_relay_in_worker:
            relays.append(start_relay_thread(app))
        threading.Thread(
            target=measure_queues, args=(app, stopping, _QUEUE_DEPTH_SECONDS), daemon=True
        ).start()
        if settings.broker_is_redis:
            interval = max(1.0, min(10.0, settings.celery_visibility_timeout / 4))
            threading.Thread(
                target=sweep_unacked, args=(app, stopping, interval), name="sweep", daemon=True
            ).start()

    def on_shutdown(**_: Any) -> None:
        stopping.set()
        for relay in relays:
            relay.stop()

    signals.worker_ready.connect(on_ready, weak=False, dispatch_uid="myapp-worker-ready")
    signals.worker_shutting_down.connect(on_shutdown, weak=False, dispatch_uid="myapp-worker-stop")
